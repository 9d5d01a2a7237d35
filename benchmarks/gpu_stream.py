"""The GPU stream case for benchmarks/device_check.sh: the WebSocket frame stream through the real server.

    python -m benchmarks.gpu_stream --out DIR           # on an NVIDIA GPU: SD 2.1-shaped random weights, 512x512
    python -m benchmarks.gpu_stream --smoke --out DIR   # CPU, tiny model, 64x64: the plumbing only

SD-Turbo-shaped frames (no guidance, one denoising step: steps 2 x strength 0.5) with a random-weight tiny
autoencoder in TAESD's layout, CUDA graphs captured at start-up. Closed loop (per-frame latency and overhead) and
open loop at 120 fps (delivered fps, dropped fraction). Target: >= 60 fps per stream end to end. Writes
DIR/stream-<gpu>.json after each run (a timeout keeps what was measured) and its plot.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

from benchmarks import sd21
from benchmarks.stream import format_table, gpu_stream_case


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no-gpu"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_stream", description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="CPU, tiny model, few frames")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--frames", type=int, default=None, help="frames per run (default 300; smoke 5)")
    args = p.parse_args(argv)
    size = 64 if args.smoke else 512
    frames = args.frames or (5 if args.smoke else 300)
    gpu = "cpu" if args.smoke else _gpu_name()
    workdir = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    if args.smoke:  # the serving tests' tiny model: the plumbing in seconds
        from serving.tiny import write_tiny_model, write_tiny_taesd

        checkpoint, vae = write_tiny_model(workdir / "checkpoint"), write_tiny_taesd(workdir / "taesd")
    else:
        checkpoint = sd21.write_random_checkpoint(workdir / "checkpoint", sd21.SD21)
        vae = sd21.write_tiny_vae(sd21.SD21, workdir / "taesd")
    args.out.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "-" for c in gpu.lower()).strip("-")
    path = args.out / f"stream-{'smoke-' if args.smoke else ''}{slug}.json"
    header = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "gpu": gpu,
              "smoke": args.smoke, "size": size, "frames": frames}

    def write(result: dict) -> None:
        path.write_text(json.dumps({**header, **result}, indent=2) + "\n")

    result = gpu_stream_case(checkpoint, vae, frames=frames, size=size, device="cpu" if args.smoke else "cuda",
                             on_run=write)
    write(result)
    from serving.bench_stream import write_plot

    write_plot(result["runs"]["closed_loop"], path.with_suffix(".png"))
    print(format_table(result["summary"]))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
