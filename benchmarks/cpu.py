"""CPU benchmark (`make bench`): HTTP overhead of the server, cold start vs raw weight read, and CDK synth time.

Writes benchmarks/results/cpu.json and cpu.png and prints a table. Each measure lives in its own module:

* benchmarks.overhead - http_overhead_ms_p50 and its steadier companions (tiny model, real server subprocess).
* benchmarks.coldstart - spawn of `python -m serving serve --skip-warmup` to the first GET /readyz 200 against
  a raw read of the same files, with the page cache warm (cold_start_ready_s, cold_start_ratio) and cold
  (cold_start_cold_cache_ready_s, cold_start_cold_cache_ratio; evicted by benchmarks.pagecache), plus the
  phases of the cold starts. The checkpoint is a random-weight fp16 safetensors SD 2.1 (UNet 866M params,
  OpenCLIP-H text tower, VAE: 2.6 GB) written once under .cache/.
* benchmarks.imports - what the imports cost and whether torch._dynamo could be deferred.
* benchmarks.synth - synth_s, a fresh `build_app().synth()` subprocess.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

from benchmarks import sd21
from benchmarks.coldstart import ensure_checkpoint, measure_cold_start
from benchmarks.imports import import_profile
from benchmarks.overhead import ensure_tiny_model, measure_http_overhead
from benchmarks.report import TARGET_COLD_START_RATIO, TARGET_HTTP_OVERHEAD_MS, machine, plot, print_table
from benchmarks.synth import measure_synth

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
CACHE_DIR = REPO_ROOT / ".cache"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="reduced run for tests: fewer requests, tiny checkpoint for the cold start")
    p.add_argument("--requests", type=int, default=None, help="timed requests per side (default 100; quick 10)")
    p.add_argument("--warmup", type=int, default=None, help="untimed requests per side (default 5; quick 2)")
    p.add_argument("--size", type=int, default=64, help="image width and height of the overhead requests")
    p.add_argument("--steps", type=int, default=2, help="denoising steps of the overhead requests")
    p.add_argument("--cold-start-runs", type=int, default=None,
                   help="server starts to time, each warm and cold cache (default 3; quick 1)")
    p.add_argument("--cold-start-dtype", choices=("float16", "float32"), default="float16",
                   help="--dtype of the cold-start server; float16 matches the checkpoint (and the cuda backend), "
                   "float32 adds the CPU backend's upcast")
    p.add_argument("--tiny-model", type=Path, default=CACHE_DIR / "tiny-model",
                   help="tiny model directory for the overhead runs (written if missing)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="cold-start checkpoint directory (default .cache/sd21-random-fp16, written if missing)")
    p.add_argument("--skip-synth", action="store_true", help="with --quick only: leave synth_s out")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="output directory")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.skip_synth and not args.quick:
        raise SystemExit("benchmarks.cpu: --skip-synth is only for --quick runs; make bench always measures synth")
    requests = args.requests or (10 if args.quick else 100)
    warmup = args.warmup if args.warmup is not None else (2 if args.quick else 5)
    runs = args.cold_start_runs or (1 if args.quick else 3)
    if requests < 1 or warmup < 0 or runs < 1:
        raise SystemExit("benchmarks.cpu: --requests and --cold-start-runs must be >= 1, --warmup >= 0")
    if args.size % 8 or args.size < 64 or args.steps < 1:
        raise SystemExit("benchmarks.cpu: --size must be a multiple of 8 >= 64 and --steps >= 1")

    arch = sd21.TINY if args.quick else sd21.SD21
    checkpoint = args.checkpoint or CACHE_DIR / f"{arch.name}-random-fp16"
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": bool(args.quick),
        "machine": machine(),
        "cold_start_checkpoint": arch.name,
    }
    print("measuring HTTP overhead...", flush=True)
    result.update(measure_http_overhead(ensure_tiny_model(args.tiny_model), args.size, args.steps, requests, warmup))
    print("measuring cold start (warm and cold page cache)...", flush=True)
    result.update(measure_cold_start(ensure_checkpoint(checkpoint, arch), runs, args.cold_start_dtype))
    print("profiling imports...", flush=True)
    result["import_profile"] = import_profile()
    if args.skip_synth:
        result["synth_s"] = None
    else:
        print("measuring synth...", flush=True)
        result.update(measure_synth(REPO_ROOT))
    result["machine"]["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    result["targets"] = {
        "http_overhead_ms_p50": TARGET_HTTP_OVERHEAD_MS,
        "cold_start_ratio": TARGET_COLD_START_RATIO,
        "cold_start_cold_cache_ratio": TARGET_COLD_START_RATIO,
    }

    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "cpu.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    if not args.no_plot:
        plot(result, args.out / "cpu.png")
    print(f"\nwrote {json_path}" + ("" if args.no_plot else f" and {args.out / 'cpu.png'}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
