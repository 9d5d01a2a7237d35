"""`make serve` binds 127.0.0.1 unless HOST is set (the README says so; the server has no key locally)."""
from __future__ import annotations

import subprocess

from tests.conftest import REPO_ROOT


def _serve_command(*make_args: str) -> str:
    # -n prints the recipe without running it; the prerequisites are made up-to-date with -o.
    out = subprocess.run(["make", "-n", "-o", ".venv/.installed", "-o", ".cache/tiny-model/model_index.json", "serve",
                          *make_args], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    (line,) = [ln for ln in out.splitlines() if "-m serving serve" in ln]
    return line


def _resolved_host(environment: dict[str, str]) -> str:
    line = _serve_command()
    expression = line.split("--host ", 1)[1].split(" ", 1)[0]  # the shell expression the recipe passes
    return subprocess.run(["bash", "-c", f"echo {expression}"], env=environment, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_make_serve_binds_loopback_unless_host_is_set():
    assert _resolved_host({"PATH": "/usr/bin:/bin"}) == "127.0.0.1"
    assert _resolved_host({"PATH": "/usr/bin:/bin", "HOST": "0.0.0.0"}) == "0.0.0.0"
    # The metrics port follows --host unless --metrics-host says otherwise.
    assert "--metrics-host" not in _serve_command()
