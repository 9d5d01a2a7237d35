"""Frame-stream benchmark (`make bench` runs the CPU case): the WebSocket stream through a real server process.

CPU case (default): tiny random-weight model with a tiny AutoencoderTiny (--stream-vae), 256x256 JPEG frames,
one stream, closed loop (the next frame leaves when the previous answer arrived, so no frame waits on the
server). The figure of merit is the per-frame overhead: client round trip minus the server's inference_ms, i.e.
what the stream adds around the pipeline (JPEG decode and encode, the hop to the engine's worker thread,
WebSocket framing both ways). Target: p50 <= 3 ms. A second, open-loop run at 30 fps shows latest-frame-wins
(delivered fps and the dropped fraction).

GPU case (``gpu_stream_case``, or ``python -m benchmarks.stream --gpu-model DIR --stream-vae DIR`` from the GPU
device script): an SD-Turbo-shaped model at 512x512, one
denoising step (steps 2 x strength 0.5), the tiny VAE, CUDA graphs warmed at start-up; closed loop and open loop
at 120 fps. Target on an H100/H200: >= 60 fps per stream end to end through the WebSocket, aim beyond 100.

Writes benchmarks/results/stream-<case>.json and .png and prints a summary table.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path

from benchmarks import sd21
from benchmarks.serverproc import ServerProcess

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
CACHE_DIR = REPO_ROOT / ".cache"
TARGET_OVERHEAD_P50_MS = 3.0
TARGET_GPU_FPS = 60.0


def _runs(url: str, size: int, frames: int, steps: int | None, strength: float | None, open_fps: float,
          on_run=None) -> dict:
    """Closed loop, then open loop; ``on_run(runs)`` after each, so a timeout keeps what was measured."""
    from loadtest.stream import StreamBenchConfig, run_stream_bench

    common = dict(url=url, width=size, height=size, frame_format="jpeg", output_format="jpeg", steps=steps,
                  strength=strength, prompt="a watercolour painting of a city street")
    # Untimed: the first frames pay for the config (prompt encoding) and any lazy allocation.
    asyncio.run(run_stream_bench(StreamBenchConfig(frames=min(5, frames), **common)))
    runs = {"closed_loop": asyncio.run(run_stream_bench(StreamBenchConfig(frames=frames, fps=0, **common)))}
    if on_run is not None:
        on_run(runs)
    runs["open_loop"] = asyncio.run(run_stream_bench(StreamBenchConfig(frames=frames, fps=open_fps, **common)))
    if on_run is not None:
        on_run(runs)
    return runs


def _server_args(vae: Path, size: int, extra: list[str]) -> list[str]:
    return ["--stream-vae", str(vae), "--stream-warmup-size", f"{size}x{size}", "--max-frame-bytes", str(4 << 20),
            "--log-level", "warning", *extra]


def cpu_stream_case(frames: int = 200, size: int = 256) -> dict:
    from serving.model.tiny import write_tiny_model, write_tiny_taesd

    model, vae = CACHE_DIR / "tiny-model", CACHE_DIR / "tiny-taesd"
    if not (model / "model_index.json").is_file():
        write_tiny_model(model)
    if not (vae / "config.json").is_file():
        write_tiny_taesd(vae)
    # One intra-op thread, as in the server tests: on a small shared CPU more threads only add spin-waits.
    with ServerProcess(model, "cpu", _server_args(vae, size, []), env={"OMP_NUM_THREADS": "1"}) as server:
        server.wait_ready()
        runs = _runs(f"http://127.0.0.1:{server.port}", size, frames, steps=2, strength=0.5, open_fps=30)
    return _report("cpu", size, runs, target_overhead=TARGET_OVERHEAD_P50_MS)


def gpu_stream_case(model: str | Path, vae: str | Path, frames: int = 600, size: int = 512,
                    server_args: list[str] | None = None, device: str = "cuda", on_run=None,
                    env: dict[str, str] | None = None) -> dict:
    """The 512x512 1-step stream case on cuda; ``server_args`` and ``env`` are the pods' own (compile mode etc.).

    SD-Turbo-shaped: no guidance, and steps 2 x strength 0.5 = one denoising step per frame.
    """
    args = _server_args(Path(vae), size, ["--max-concurrency", "1", "--default-guidance-scale", "0",
                                          "--default-steps", "1", *(server_args or [])])
    # One intra-op thread on CPU (the smoke run), as in the CPU case: more only spin-wait on a small machine.
    env = {**(env or {}), **({"OMP_NUM_THREADS": "1"} if device == "cpu" else {})}
    with ServerProcess(model, device, args, env=env or None) as server:
        server.wait_ready(timeout=600)
        runs = _runs(f"http://127.0.0.1:{server.port}", size, frames, steps=2, strength=0.5, open_fps=120,
                     on_run=None if on_run is None else (lambda r: on_run(_partial("gpu", size, r))))
    return _report("gpu", size, runs, target_fps=TARGET_GPU_FPS)


def _partial(case: str, size: int, runs: dict) -> dict:
    if "open_loop" in runs:
        return _report(case, size, runs, target_fps=TARGET_GPU_FPS)
    return {"summary": None, "runs": runs}


def _report(case: str, size: int, runs: dict, target_overhead: float | None = None,
            target_fps: float | None = None) -> dict:
    closed, opened = runs["closed_loop"], runs["open_loop"]
    for run in (closed, opened):
        if run["streams_failed"] or run["errors"]:
            raise RuntimeError(f"stream run failed: {(run['streams_failed'] + run['errors'])[0]}")
    summary = {
        "case": case,
        "frame": f"{size}x{size} jpeg",
        "overhead_ms_p50": closed["overhead_ms"]["p50"],
        "overhead_ms_p99": closed["overhead_ms"]["p99"],
        "latency_ms_p50": closed["latency_ms"]["p50"],
        "latency_ms_p99": closed["latency_ms"]["p99"],
        "inference_ms_p50": closed["inference_ms"]["p50"],
        "closed_loop_fps": closed["delivered_fps_per_stream"],
        "open_loop_target_fps": opened["config"]["fps"],
        "open_loop_delivered_fps": opened["delivered_fps_per_stream"],
        "open_loop_dropped_fraction": opened["dropped_fraction"],
        "target_overhead_ms_p50": target_overhead,
        "target_fps": target_fps,
    }
    return {"summary": summary, "runs": runs}


def write_results(result: dict, name: str) -> tuple[Path, Path]:
    from loadtest.stream import write_plot

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    document = {"generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "loadavg_1m": load and load[0]},
                **result}
    json_path, png_path = RESULTS_DIR / f"{name}.json", RESULTS_DIR / f"{name}.png"
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    write_plot(result["runs"]["closed_loop"], png_path)
    return json_path, png_path


def format_table(summary: dict) -> str:
    def num(value, unit=""):
        return "-" if value is None else f"{value:.2f}{unit}"

    rows = [
        ("per-frame overhead p50", num(summary["overhead_ms_p50"], " ms"),
         num(summary["target_overhead_ms_p50"], " ms") if summary["target_overhead_ms_p50"] else ""),
        ("per-frame overhead p99", num(summary["overhead_ms_p99"], " ms"), ""),
        ("round trip p50 / p99", f"{num(summary['latency_ms_p50'])} / {num(summary['latency_ms_p99'])} ms", ""),
        ("server inference p50", num(summary["inference_ms_p50"], " ms"), ""),
        ("closed-loop fps", num(summary["closed_loop_fps"]),
         f">= {summary['target_fps']:g}" if summary["target_fps"] else ""),
        (f"open loop at {summary['open_loop_target_fps']:g} fps: delivered",
         num(summary["open_loop_delivered_fps"], " fps"), ""),
        ("open loop: dropped fraction", num(summary["open_loop_dropped_fraction"]), ""),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"stream {summary['case']} ({summary['frame']})", f"{'metric':<{width}}  {'measured':>18}  target"]
    lines += [f"{name:<{width}}  {value:>18}  {target}" for name, value, target in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.stream", description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=200, help="frames per run (default 200)")
    p.add_argument("--size", type=int, default=None, help="frame width and height (default 256 cpu, 512 gpu)")
    p.add_argument("--gpu-model", type=Path, default=None,
                   help="run the GPU case instead: this SD-Turbo-shaped diffusers directory on cuda")
    p.add_argument("--stream-vae", type=Path, default=None,
                   help="GPU case: AutoencoderTiny directory (default: a random-weight one in TAESD's full layout)")
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="GPU case: extra server flag (repeat), e.g. the pods' --compile-mode")
    args = p.parse_args(argv)
    if args.gpu_model is not None:
        vae = args.stream_vae or sd21.write_tiny_vae(sd21.SD21, CACHE_DIR / "taesd-random")
        result = gpu_stream_case(args.gpu_model, vae, frames=args.frames, size=args.size or 512,
                                 server_args=args.server_arg)
        name = "stream-gpu"
    else:
        result = cpu_stream_case(frames=args.frames, size=args.size or 256)
        name = "stream-cpu"
    json_path, png_path = write_results(result, name)
    print(format_table(result["summary"]))
    print(f"results: {json_path.relative_to(REPO_ROOT)}, {png_path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
