"""serving/static/client.js (the playground's device client) under Node's built-in test runner."""
from __future__ import annotations

import shutil
import subprocess

from tests.serving.conftest import REPO_ROOT


def test_client_js():
    node = shutil.which("node")
    assert node, "node is missing (make setup installs it into node_modules/.bin)"
    result = subprocess.run([node, "--no-warnings", "--test", "tests/clients/js/client.test.mjs"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout and "# pass 6" in result.stdout, result.stdout[-2000:]
