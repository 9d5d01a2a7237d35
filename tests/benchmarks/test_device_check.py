"""benchmarks/device_check.sh: shellcheck, the whole --smoke run on CPU (every phase, the report), the deadline."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "device_check.sh"
# What the device tool brings back from $OUT: at most 8 plain files, named in letters, digits, '.', '_', '-'.
RETURNED_NAME = re.compile(r"[A-Za-z0-9._-]+")


def _shellcheck() -> str:
    return shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")


def test_script_passes_shellcheck():
    result = subprocess.run([_shellcheck(), "-x", "-s", "bash", "-S", "style", str(SCRIPT.relative_to(REPO_ROOT))],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _run(tmp_path, pod, *args, **env) -> subprocess.CompletedProcess:
    environ = {**os.environ, "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"), "POD": str(pod),
               "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, cwd=tmp_path, env=environ,
                          timeout=600)


@pytest.mark.slow
@pytest.mark.timeout(600)  # about 2 minutes on an idle 2-vCPU machine; several times that when it is shared
def test_smoke_run_measures_every_phase_in_order_and_ends_with_the_table(tmp_path, nvidia_pod):
    """The rehearsal of the device run: the same script and phases on CPU with the tiny layout (make test runs it),
    so a syntax error, a missing module or a bad path fails here and not on the device."""
    result = _run(tmp_path, nvidia_pod, "--smoke")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = tmp_path / "out"
    files = sorted(p.name for p in out.iterdir())
    streams = [name for name in files if name.startswith("stream-smoke-cpu-")]
    assert len(streams) == 1 and sorted(set(files) - set(streams)) == [
        "device_check.log", "e2e.json", "pipelines.json", "report.txt", "versions.json", "warmstart.json"]
    assert all(RETURNED_NAME.fullmatch(name) for name in files)
    log = (out / "device_check.log").read_text()
    order = [log.index(f"=== {name} (limit") for name in ("prepare", "pipelines", "stream", "e2e", "warmstart")]
    assert order == sorted(order)

    assert json.loads((out / "versions.json").read_text())["torch"]
    pipelines = json.loads((out / "pipelines.json").read_text())
    assert pipelines["smoke"] is True and pipelines["numerics"]["device_type"] == "cpu"
    assert pipelines["versions"]["diffusers"] and not pipelines["errors"]
    measured = {(r["variant"], r["steps"], r["cfg"]) for r in pipelines["rows"]}
    assert measured == {("baseline", 1, True), ("baseline", 1, False), ("fast", 1, True), ("fast", 1, False),
                        ("tiny-vae", 1, False)}
    for row in pipelines["rows"]:
        assert row["p50_ms"] > 0 and row["first_call_ms"] > 0
        assert (row["mean_abs_diff_vs_baseline"] is None) == (row["variant"] == "baseline")
    assert pipelines["variants"]["fast"]["settings"]["warmup_sizes"] == "64x64"
    assert "warmup_per_key_s" in pipelines["variants"]["fast"]
    e2e = json.loads((out / "e2e.json").read_text())
    assert e2e["ready_s"] > 0 and {(r["steps"], r["cfg"]) for r in e2e["rows"]} == {(1, True), (1, False)}
    assert all(r["http_p50_ms"] > 0 and r["failed"] == 0 for r in e2e["rows"])
    assert "--warmup-sizes" in e2e["server_command"]
    # Neither compilation nor the stream is the e2e server's subject.
    assert e2e["phase_env"]["SERVING_COMPILE"] == "false" and e2e["phase_env"]["SERVING_MAX_STREAMS"] == "0"
    warm = json.loads((out / "warmstart.json").read_text())
    assert warm["ready_s"] > 0 and warm["phase_env"] == {"SERVING_MAX_STREAMS": "0"}
    assert warm["rows"] and all(r["failed"] == 0 and "error" not in r["first_request"] for r in warm["rows"])
    stream = json.loads((out / streams[0]).read_text())
    assert stream["summary"]["closed_loop_fps"] > 0 and stream["phase_env"]["SERVING_COMPILE"] == "false"

    report = (out / "report.txt").read_text()
    assert "SMOKE RUN" in report and "not measured" not in report
    assert "differing from the nvidia pods': SERVING_COMPILE_MODE default" in report
    assert pipelines["pod_deviations"]["SERVING_MAX_IMAGES"]["run"] == "1"
    assert pipelines["variants"]["fast"]["settings"]["compile_mode"] == "default"
    for name in ("prepare", "pipelines", "stream", "e2e", "warmstart"):
        assert re.search(rf"\n  {name}\s+ok", report), name
    assert report in log


def test_the_deadline_skips_phases_and_still_reports(tmp_path, nvidia_pod):
    result = _run(tmp_path, nvidia_pod, "--smoke", DEADLINE="5")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = (tmp_path / "out" / "report.txt").read_text()
    assert report.count("SKIPPED (deadline)") == 5 and report.count("not measured") == 8
    assert "differing from the nvidia pods': SERVING_COMPILE_MODE default" in report


def test_pod_set_empty_runs_the_pods_settings_exactly(tmp_path, nvidia_pod):
    result = _run(tmp_path, nvidia_pod, "--smoke", DEADLINE="5", POD_SET="")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert json.loads((tmp_path / "work" / "pod-run.json").read_text())["deviations"] == {}
    assert "server settings: exactly the nvidia pods'" in (tmp_path / "out" / "report.txt").read_text()


def test_unknown_arguments_are_refused(tmp_path, nvidia_pod):
    result = _run(tmp_path, nvidia_pod, "--fast")
    assert result.returncode == 2 and "usage:" in result.stderr
