"""benchmarks.synth: a missing app is named, not a stack trace."""
from __future__ import annotations

import pytest

from benchmarks.synth import measure_synth


def test_missing_app_fails_clearly(tmp_path):
    with pytest.raises(SystemExit, match="app.py is missing"):
        measure_synth(tmp_path)
