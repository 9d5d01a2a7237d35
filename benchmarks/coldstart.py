"""Process cold start: spawn of `python -m serving serve` to the first GET /readyz 200, against a raw read.

Measured twice per run: with the page cache warm (the weight files read just before) and cold (evicted with
`posix_fadvise`, as on a node whose disk nothing has read yet). The cold runs also give the phases from the
server's own log lines: server up, imports, weight read (the prefetch thread, overlapping the imports), pipeline
build, and, from one extra run with the warm-up on, the warm-up.
"""
from __future__ import annotations

import datetime as dt
import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks import sd21
from benchmarks.imports import imports_s
from benchmarks.pagecache import evict, files_under, raw_read_s, resident_fraction
from benchmarks.serverproc import ServerProcess

# The extra warm-up run's shape: a real first generation through every module, small enough for a CPU.
WARMUP_SIZE = "64x64"
WARMUP_STEPS = 2


def ensure_checkpoint(path: Path, arch: sd21.ArchSpec) -> Path:
    """The random fp16 checkpoint for `arch`, written on first use and reused afterwards."""
    marker = path / "random-checkpoint.json"
    if marker.is_file() and (path / "model_index.json").is_file():
        try:
            if json.loads(marker.read_text()).get("arch") == arch.name:
                return path
        except json.JSONDecodeError:
            pass
    print(f"writing random {arch.name} fp16 checkpoint to {path} (once)...", flush=True)
    sd21.write_random_checkpoint(path, arch)
    return path


def _at_s(entry: dict[str, Any], spawned_wall: float) -> float:
    when = dt.datetime.strptime(entry["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
    return when.timestamp() - spawned_wall


def phases(entries: list[dict[str, Any]], spawned_wall: float, ready_s: float) -> dict[str, float | None]:
    """One start's phases from its log lines; `*_by_s` are seconds since spawn, the others durations."""
    by_msg = {e.get("msg"): e for e in entries}
    loading, pipeline, prefetched = by_msg.get("loading model"), by_msg.get("pipeline loaded"), by_msg.get(
        "weights prefetched")
    loaded, warmed = by_msg.get("model loaded"), by_msg.get("warm-up done")
    result: dict[str, float | None] = {
        # Interpreter, settings, the server's own modules, both ports listening: until the load thread begins.
        "server_up_s": _at_s(loading, spawned_wall) if loading else None,
        "imports_s": pipeline.get("imports_s") if pipeline else None,
        "weight_read_s": prefetched.get("read_s") if prefetched else None,
        "weights_read_by_s": _at_s(prefetched, spawned_wall) if prefetched else None,
        "pipeline_build_s": pipeline.get("build_s") if pipeline else None,
        "model_loaded_by_s": _at_s(loaded, spawned_wall) if loaded else None,
        "warmup_s": warmed.get("warmup_s") if warmed else None,
        "ready_s": ready_s,
    }
    if pipeline:
        built_at = _at_s(pipeline, spawned_wall)
        result["imports_done_by_s"] = built_at - pipeline["build_s"] - pipeline.get("device_init_wait_s", 0.0)
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.items()}


def _median_phases(runs: list[dict[str, float | None]]) -> dict[str, float | None]:
    keys = sorted({k for run in runs for k in run})
    out: dict[str, float | None] = {}
    for key in keys:
        values = [run[key] for run in runs if run.get(key) is not None]
        out[key] = round(statistics.median(values), 3) if values else None
    return out


def _start(checkpoint: Path, dtype: str, *extra: str) -> tuple[float, dict[str, float | None], float | None]:
    with ServerProcess(checkpoint, device="cpu", extra_args=["--dtype", dtype, *extra]) as server:
        ready = server.wait_ready(timeout=600)
        entries = server.log_entries()
    found = phases(entries, server.started_wall, ready)
    loaded = next((e.get("load_s") for e in entries if e.get("msg") == "model loaded"), None)
    return ready, found, loaded


def measure_cold_start(checkpoint: Path, runs: int, dtype: str) -> dict[str, Any]:
    files = files_under(checkpoint)
    size_bytes = sum(p.stat().st_size for p in files)
    raw_read_s(files)
    warm_reads = [raw_read_s(files) for _ in range(max(3, runs))]
    warm_ready: list[float] = []
    load: list[float] = []
    imports: list[float] = []
    cold_reads: list[float] = []
    cold_ready: list[float] = []
    cold_phases: list[dict[str, float | None]] = []
    resident: list[float] = []
    for _ in range(runs):
        # Warm, then cold, in each run, so both see the same background load on a shared machine.
        imports.append(imports_s())
        raw_read_s(files)
        ready, _, loaded = _start(checkpoint, dtype, "--skip-warmup")
        warm_ready.append(ready)
        if loaded is not None:
            load.append(loaded)
        evict(files)
        resident.append(resident_fraction(files))
        cold_reads.append(raw_read_s(files))
        evict(files)
        resident.append(resident_fraction(files))
        ready, found, _ = _start(checkpoint, dtype, "--skip-warmup")
        cold_ready.append(ready)
        cold_phases.append(found)
    # The warm-up phase, from one more cold start that runs it before reporting ready.
    evict(files)
    _, warmup_phases, _ = _start(checkpoint, dtype, "--warmup-sizes", WARMUP_SIZE,
                                 "--default-steps", str(WARMUP_STEPS))
    warm_ready_s, warm_read_s = statistics.median(warm_ready), statistics.median(warm_reads)
    cold_ready_s, cold_read_s = statistics.median(cold_ready), statistics.median(cold_reads)
    return {
        "cold_start_ready_s": round(warm_ready_s, 3),
        "cold_start_raw_read_s": round(warm_read_s, 6),
        "cold_start_ratio": round(warm_ready_s / warm_read_s, 2),
        "cold_start_cold_cache_ready_s": round(cold_ready_s, 3),
        "cold_start_cold_cache_raw_read_s": round(cold_read_s, 6),
        "cold_start_cold_cache_ratio": round(cold_ready_s / cold_read_s, 2),
        # Model load inside the server (its "model loaded" line), warm cache.
        "cold_start_load_s": round(statistics.median(load), 3) if load else None,
        # A fresh interpreter importing torch, diffusers, transformers and the server: the floor under any start.
        "cold_start_imports_s": round(statistics.median(imports), 3),
        "cold_start_phases_s": _median_phases(cold_phases),
        "cold_start_warmup_s": warmup_phases.get("warmup_s"),
        "cold_start_warmup_shape": {"size": WARMUP_SIZE, "steps": WARMUP_STEPS},
        "cold_start_runs": runs,
        "cold_start_dtype": dtype,
        "checkpoint_bytes": size_bytes,
        "raw_read_gbps": round(size_bytes / warm_read_s / 1e9, 2),
        "cold_cache_raw_read_gbps": round(size_bytes / cold_read_s / 1e9, 2),
        # Share of the checkpoint's pages still cached right after each eviction (mincore): 0 means truly cold.
        "cold_cache_resident_after_evict_max": round(max(resident), 4),
        "page_cache": "warm: files read just before; cold: evicted with posix_fadvise(DONTNEED) before each start",
    }
