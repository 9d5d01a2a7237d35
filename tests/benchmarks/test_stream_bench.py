"""benchmarks.stream / benchmarks.gpu_stream: the GPU stream case's --smoke run on CPU (same code path)."""
from __future__ import annotations

import json

import pytest

from benchmarks import gpu_stream
from benchmarks.stream import format_table


@pytest.mark.slow
def test_gpu_stream_smoke_writes_results_and_plot(tmp_path, capsys):
    assert gpu_stream.main(["--smoke", "--frames", "2", "--out", str(tmp_path)]) == 0
    [path] = tmp_path.glob("stream-smoke-*.json")
    result = json.loads(path.read_text())
    assert result["smoke"] is True and result["size"] == 64
    summary = result["summary"]
    assert summary["case"] == "gpu" and summary["target_fps"] == 60
    assert summary["closed_loop_fps"] > 0 and summary["latency_ms_p50"] >= summary["inference_ms_p50"] > 0
    assert result["runs"]["closed_loop"]["frames_received"] == 2
    assert path.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    table = capsys.readouterr().out
    assert "per-frame overhead p50" in table and ">= 60" in table


def test_table_marks_missing_values():
    summary = {"case": "cpu", "frame": "256x256 jpeg", "overhead_ms_p50": 1.5, "overhead_ms_p99": None,
               "latency_ms_p50": 10.0, "latency_ms_p99": 12.0, "inference_ms_p50": 8.5, "closed_loop_fps": 95.0,
               "open_loop_target_fps": 30, "open_loop_delivered_fps": 29.7, "open_loop_dropped_fraction": 0.0,
               "target_overhead_ms_p50": 3.0, "target_fps": None}
    table = format_table(summary)
    assert "1.50 ms" in table and "3.00 ms" in table and "-" in table.splitlines()[3]
