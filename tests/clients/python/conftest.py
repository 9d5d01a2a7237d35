"""The client package is tested from this checkout (clients/python), whether or not `make setup` installed it."""
from __future__ import annotations

import sys

from tests.serving.conftest import REPO_ROOT

CLIENT_ROOT = REPO_ROOT / "clients" / "python"
if str(CLIENT_ROOT) not in sys.path:
    sys.path.insert(0, str(CLIENT_ROOT))
