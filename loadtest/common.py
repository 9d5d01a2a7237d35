"""What the HTTP and the stream load clients share: percentiles, option parsing, the API key."""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Sequence

DEFAULT_PROMPT = "a photo of an astronaut riding a horse on mars"
PERCENTILES = (50, 90, 99)
MAX_SEED = 2**32 - 1
_SIZE = re.compile(r"^(\d+)x(\d+)$")


class UsageError(ValueError):
    """A bad command-line value; the message names the option."""


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile with linear interpolation between order statistics (numpy's default method)."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99, mean, min and max of a sample (all None when it is empty)."""
    stats: dict[str, float | None] = {f"p{q}": percentile(values, q) for q in PERCENTILES}
    stats["mean"] = sum(values) / len(values) if values else None
    stats["min"] = min(values) if values else None
    stats["max"] = max(values) if values else None
    return stats


def parse_size(value: str) -> tuple[int, int]:
    match = _SIZE.match(value.strip().lower())
    if not match:
        raise UsageError(f"--size must look like WIDTHxHEIGHT (e.g. 512x512), got {value!r}")
    width, height = int(match[1]), int(match[2])
    if width <= 0 or height <= 0 or width % 8 or height % 8:
        raise UsageError(f"--size needs positive multiples of 8 for width and height (the UNet's latent "
                         f"grid is 1/8 of the image), got {value!r}")
    return width, height


def read_api_key(api_key: str | None, api_key_file: Path | None) -> str | None:
    """--api-key, else --api-key-file, else $SERVING_BENCH_API_KEY (None: send no key)."""
    if api_key is not None and api_key_file is not None:
        raise UsageError("--api-key and --api-key-file are mutually exclusive; give one")
    if api_key_file is not None:
        try:
            api_key = api_key_file.read_text().strip()
        except OSError as exc:
            raise UsageError(f"--api-key-file {str(api_key_file)!r} is unreadable: {exc.strerror}") from exc
        if not api_key:
            raise UsageError(f"--api-key-file {str(api_key_file)!r} is empty")
        return api_key
    return api_key if api_key is not None else (os.environ.get("SERVING_BENCH_API_KEY") or None)
