"""The GPU stream case for benchmarks/device_check.sh: the WebSocket frame stream through the real server.

    python -m benchmarks.gpu_stream --out DIR           # on an NVIDIA GPU: SD 2.1-shaped random weights, 512x512
    python -m benchmarks.gpu_stream --smoke --out DIR   # CPU, tiny layout, 64x64: the plumbing only

SD-Turbo-shaped frames (no guidance, one denoising step: steps 2 x strength 0.5) with a random-weight tiny
autoencoder in TAESD's layout, CUDA graphs captured at start-up, the server configured as the nvidia pod
(benchmarks.podenv; the stream's own flags on top; no API key) except that compile is off (`STREAM_ENV`): the
stream runs its own captured graphs, and the REST shapes a compiling pod would warm are no case of this phase.
Closed loop (per-frame latency and overhead) and
open loop at 120 fps (delivered fps, dropped fraction). Target: >= 60 fps per stream end to end. Writes
DIR/stream-<gpu>.json after each run (a timeout keeps what was measured).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks import gpu_common, podenv
from benchmarks.gpu_common import ResultFile
from benchmarks.stream import format_table, gpu_stream_case

# The frame path captures its own CUDA graphs whatever --compile says; compiling the REST shapes would only
# lengthen the start (and nothing here sends a REST request).
STREAM_ENV = {"SERVING_COMPILE": "false", "SERVING_CUDA_GRAPHS": "false"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_stream", description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="CPU, tiny layout, few frames")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--work", type=Path, default=Path("/tmp/edge-bench"), help="scratch directory (shared models)")
    p.add_argument("--pod", type=Path, default=podenv.DEFAULT_PATH, help="the pod's rendered server settings")
    p.add_argument("--frames", type=int, default=None, help="frames per run (default 300; smoke 5)")
    args = p.parse_args(argv)
    found = gpu_common.recorded_versions(args.work)
    if not args.smoke:
        gpu_common.require_cuda("benchmarks.gpu_stream", found)
    try:
        pod = podenv.load(args.pod)
    except podenv.PodEnvError as exc:
        raise SystemExit(f"benchmarks.gpu_stream: {exc}") from None
    size = gpu_common.SMOKE_SIZE if args.smoke else gpu_common.GPU_SIZE
    frames = args.frames or (5 if args.smoke else 300)
    gpu = gpu_common.gpu_label(args.smoke, found)
    models = gpu_common.ensure_models(args.work, args.smoke)
    result = ResultFile(args.out / f"stream-{'smoke-' if args.smoke else ''}{gpu_common.slug(gpu)}.json",
                        {"phase": "stream", "gpu": gpu, "smoke": args.smoke, "size": size, "frames": frames,
                         "versions": found, "pod_args": pod["args"], "phase_env": STREAM_ENV,
                         "pod_deviations": pod.get("deviations") or {}})
    env = {k: v for k, v in podenv.server_env(pod, **STREAM_ENV).items() if k != "SERVING_COMPILE_MODE"}
    outcome = gpu_stream_case(models.checkpoint, models.tiny_vae, frames=frames, size=size,
                              device="cpu" if args.smoke else "cuda", on_run=lambda r: result.set(**r),
                              server_args=list(pod["args"]), env=env)
    result.set(**outcome)
    print(format_table(outcome["summary"]))
    print(f"results: {result.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
