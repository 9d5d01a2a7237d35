"""The client package stands apart from the server: only the HTTP contract ties them; its pins follow the
server's tested versions; and `make setup` installs it."""
from __future__ import annotations

import ast
import re
import tomllib

import pytest

from edge_diffusion_client.credentials import Credentials
from tests.clients.python.conftest import CLIENT_ROOT
from tests.serving.conftest import REPO_ROOT

PACKAGE = CLIENT_ROOT / "edge_diffusion_client"


def test_the_client_imports_nothing_from_the_server_and_stays_small():
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not {m for m in modules if m.split(".")[0] in ("serving", "loadtest", "benchmarks")}, path
        assert len(path.read_text().splitlines()) <= 350, path


def test_dependencies_are_pinned_to_the_servers_tested_versions():
    project = tomllib.loads((CLIENT_ROOT / "pyproject.toml").read_text())["project"]
    pins = dict(re.fullmatch(r"([a-z-]+)==(\S+)", d).groups() for d in project["dependencies"])
    server = dict(re.fullmatch(r"([a-z-]+)==(\S+)", line).groups()
                  for line in (REPO_ROOT / "requirements-serving.txt").read_text().splitlines()
                  if re.fullmatch(r"[a-z-]+==\S+", line))
    assert pins and all(server[name] == version for name, version in pins.items())


def test_make_setup_installs_the_package():
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "-e ./clients/python" in makefile and "clients/python/pyproject.toml" in makefile


def test_credentials_refresh_once_per_expired_token():
    calls = []

    def provider(refresh: bool) -> str:
        calls.append(refresh)
        return f"t{len(calls)}"

    credentials = Credentials(provider)
    assert credentials.token() == "t1"
    assert credentials.refresh("t1") == "t2"
    assert credentials.refresh("t1") == "t2"  # a second caller that saw t1 fail gets t2, no new mint
    assert calls == [False, True] and credentials.headers("t2") == {"Authorization": "Bearer t2"}
    assert Credentials("master-key").refresh("master-key") == "master-key"
    with pytest.raises(TypeError, match="credential"):
        Credentials(42)
    with pytest.raises(TypeError, match="provider returned"):
        Credentials(lambda refresh: None).token()
