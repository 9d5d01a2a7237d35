"""benchmarks.coldstart: phases from the server's log lines, and the reused checkpoint."""
from __future__ import annotations

import json

import pytest

from benchmarks import coldstart, sd21

SPAWNED = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def _entry(offset_s: float, msg: str, **fields) -> dict:
    seconds = int(offset_s)
    stamp = f"2023-11-14T22:13:{20 + seconds:02d}.{int(round((offset_s - seconds) * 1000)):03d}Z"
    return {"ts": stamp, "msg": msg, **fields}


def test_phases_come_from_the_log_lines():
    entries = [
        _entry(0.5, "weights prefetched", read_s=0.4, bytes=10),
        _entry(1.2, "loading model"),
        _entry(6.0, "pipeline loaded", imports_s=4.0, build_s=0.7, device_init_wait_s=0.1),
        _entry(6.1, "model loaded", load_s=4.9),
        _entry(7.1, "warm-up done", warmup_s=1.0),
    ]
    found = coldstart.phases(entries, SPAWNED, ready_s=7.2)
    assert found == {"server_up_s": 1.2, "imports_s": 4.0, "weight_read_s": 0.4, "weights_read_by_s": 0.5,
                     "pipeline_build_s": 0.7, "model_loaded_by_s": 6.1, "warmup_s": 1.0, "ready_s": 7.2,
                     "imports_done_by_s": 5.2}


def test_missing_lines_leave_their_phase_empty():
    found = coldstart.phases([_entry(1.0, "loading model")], SPAWNED, ready_s=2.0)
    assert found["server_up_s"] == 1.0 and found["imports_s"] is None and "imports_done_by_s" not in found


def test_checkpoint_is_reused_when_the_marker_matches(tmp_path, monkeypatch):
    written = []
    monkeypatch.setattr(sd21, "write_random_checkpoint", lambda path, arch: written.append(arch.name) or path)
    (tmp_path / "model_index.json").write_text("{}")
    (tmp_path / "random-checkpoint.json").write_text(json.dumps({"arch": "tiny"}))
    coldstart.ensure_checkpoint(tmp_path, sd21.TINY)
    assert written == []
    coldstart.ensure_checkpoint(tmp_path, sd21.SD21)
    assert written == ["sd21"]


@pytest.mark.parametrize("runs", [[{"a": 1.0, "b": None}, {"a": 3.0, "b": None}, {"a": 2.0, "b": 5.0}]])
def test_phase_medians_skip_missing_values(runs):
    assert coldstart._median_phases(runs) == {"a": 2.0, "b": 5.0}
