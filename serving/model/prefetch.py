"""Warm the page cache with the model's weight files while the server is still importing torch/diffusers.

On a fresh node the weights come from a cold disk (EBS gp2 in most Local Zones) and the imports take seconds of
CPU; overlapping the two makes readiness approach the raw read time instead of read + imports.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger("serving.prefetch")

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".neuron", ".pt")
CHUNK_BYTES = 16 * 1024 * 1024
# Never prefetch more than this share of available memory: on small nodes (inf2.xlarge: 16 GiB) reading more
# than fits would only evict the pages read first.
MEMORY_SHARE = 0.5


def weight_files(model_dir: Path) -> list[Path]:
    """Weight files under ``model_dir``, largest first (the UNet dominates load time)."""
    files = [p for p in model_dir.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES]
    return sorted(files, key=lambda p: (-p.stat().st_size, str(p)))


def available_memory_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def prefetch(model_dir: Path, budget_bytes: int | None = None) -> int:
    """Read weight files sequentially into the page cache, within ``budget_bytes``; return the bytes read."""
    if budget_bytes is None:
        available = available_memory_bytes()
        budget_bytes = int(available * MEMORY_SHARE) if available else 0
    done = 0
    buf = bytearray(CHUNK_BYTES)
    for path in weight_files(model_dir):
        size = path.stat().st_size
        if done + size > budget_bytes:
            continue
        with open(path, "rb", buffering=0) as fh:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            while n := fh.readinto(buf):
                done += n
    return done


def start_prefetch(model: str | os.PathLike) -> threading.Thread | None:
    """Prefetch in a daemon thread; a missing path is left for the loader to report with its own clear error."""
    path = Path(model)
    if not path.is_dir():
        return None

    def run() -> None:
        started = time.perf_counter()
        try:
            read = prefetch(path)
            # The weight-read phase of a cold start: benchmarks.coldstart reads it from this line.
            log.info("weights prefetched", extra={"fields": {"bytes": read,
                                                             "read_s": round(time.perf_counter() - started, 3)}})
        except OSError as exc:  # a prefetch failure only costs speed; the loader reads the files again
            log.warning("weight prefetch failed", extra={"fields": {"error": str(exc)}})

    thread = threading.Thread(target=run, name="weight-prefetch", daemon=True)
    thread.start()
    return thread
