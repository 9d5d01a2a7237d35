"""benchmarks.stream: the summary table (the GPU stream case's --smoke run is in test_device_check.py)."""
from __future__ import annotations

from benchmarks.stream import format_table


def test_table_marks_missing_values():
    summary = {"case": "cpu", "frame": "256x256 jpeg", "overhead_ms_p50": 1.5, "overhead_ms_p99": None,
               "latency_ms_p50": 10.0, "latency_ms_p99": 12.0, "inference_ms_p50": 8.5, "closed_loop_fps": 95.0,
               "open_loop_target_fps": 30, "open_loop_delivered_fps": 29.7, "open_loop_dropped_fraction": 0.0,
               "target_overhead_ms_p50": 3.0, "target_fps": None}
    table = format_table(summary)
    assert "1.50 ms" in table and "3.00 ms" in table and "-" in table.splitlines()[3]
