"""CPU benchmark (`make bench`): HTTP overhead of the server, cold start vs raw weight read, and CDK synth time.

Writes benchmarks/results/cpu.json and cpu.png and prints a table. Measures:

* http_overhead_ms_p50: p50 of a tiny-model POST /generate through the real server subprocess minus p50 of the
  same generation (same shape, steps, guidance, seed) called on the pipeline in this process. Direct and HTTP
  requests alternate one by one, so load from anything else on the machine hits both sides alike. Two steadier
  views come with it: the p50 of per-pair differences, and the p50 of round trip minus the server's own
  X-Inference-Ms (http_overhead_outside_inference_ms_p50).
* cold_start_ready_s / cold_start_raw_read_s / cold_start_ratio: spawn of `python -m serving serve --skip-warmup`
  to the first GET /readyz 200, against reading the same files raw. The checkpoint is a random-weight fp16
  safetensors SD 2.1 (UNet 866M params, OpenCLIP-H text tower, VAE: 2.6 GB) written once under .cache/.
  Page-cache dropping needs root-only sysctl writes, so both measures are warm-cache: the files are read once
  before either is timed.
* synth_s: wall time of a fresh `python -c "build_app().synth()"` subprocess (imports, cdk-nag, asset staging).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import sd21
from benchmarks.serverproc import GenerateClient, ServerProcess

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
CACHE_DIR = REPO_ROOT / ".cache"
PROMPT = "a red cube on a wooden table, studio light"
READ_CHUNK = 16 << 20

TARGET_HTTP_OVERHEAD_MS = 3.0
TARGET_COLD_START_RATIO = 1.5


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="reduced run for tests: fewer requests, tiny checkpoint for the cold start")
    p.add_argument("--requests", type=int, default=None, help="timed requests per side (default 100; quick 10)")
    p.add_argument("--warmup", type=int, default=None, help="untimed requests per side (default 5; quick 2)")
    p.add_argument("--size", type=int, default=64, help="image width and height of the overhead requests")
    p.add_argument("--steps", type=int, default=2, help="denoising steps of the overhead requests")
    p.add_argument("--cold-start-runs", type=int, default=None, help="server starts to time (default 3; quick 1)")
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


def ensure_tiny_model(path: Path) -> Path:
    if not (path / "model_index.json").is_file():
        from serving.tiny import write_tiny_model

        write_tiny_model(path)
    return path


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


# ------------------------------------------------------------------------------------------------ HTTP overhead


def measure_http_overhead(model: Path, size: int, steps: int, requests: int, warmup: int) -> dict[str, Any]:
    import torch

    from serving.loading import load_pipeline
    from serving.modelconfig import model_defaults
    from serving.settings import Settings

    defaults = model_defaults(model, Settings(model=str(model)))
    guidance = defaults.guidance_scale
    body = {"prompt": PROMPT, "width": size, "height": size, "num_inference_steps": steps,
            "guidance_scale": guidance, "seed": 1234}
    pipe = load_pipeline(str(model), "cpu")

    def direct() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            pipe(prompt=PROMPT, width=size, height=size, num_inference_steps=steps, guidance_scale=guidance,
                 num_images_per_prompt=1, generator=torch.Generator("cpu").manual_seed(1234), output_type="pil")
        return (time.perf_counter() - start) * 1000

    direct_ms: list[float] = []
    http_ms: list[float] = []
    server_ms: list[float] = []
    with ServerProcess(model, device="cpu", extra_args=["--max-queue", "1"]) as server:
        server.wait_ready(timeout=300)
        client = GenerateClient(server.port)
        try:
            for _ in range(warmup):
                direct()
                client.generate(body)
            for _ in range(requests):
                direct_ms.append(direct())
                http_ms.append(client.generate(body)[0] * 1000)
                if client.last_inference_ms is None:
                    raise SystemExit("benchmarks.cpu: the server sent no X-Inference-Ms header")
                server_ms.append(client.last_inference_ms)
        finally:
            client.close()
    direct_p50 = statistics.median(direct_ms)
    http_p50 = statistics.median(http_ms)
    return {
        "http_overhead_ms_p50": round(http_p50 - direct_p50, 3),
        "http_p50_ms": round(http_p50, 3),
        "direct_p50_ms": round(direct_p50, 3),
        "http_overhead_paired_ms_p50": round(statistics.median(h - d for h, d in zip(http_ms, direct_ms)), 3),
        # The same request's round trip minus the server's own X-Inference-Ms: what HTTP, validation, queueing,
        # encoding and the client add, free of the run-to-run spread of the generation itself.
        "http_overhead_outside_inference_ms_p50": round(
            statistics.median(h - i for h, i in zip(http_ms, server_ms)), 3),
        "server_inference_p50_ms": round(statistics.median(server_ms), 3),
        "overhead_requests": requests,
        "overhead_shape": {"width": size, "height": size, "steps": steps, "guidance_scale": guidance},
    }


# --------------------------------------------------------------------------------------------------- cold start


def weight_files(checkpoint: Path) -> list[Path]:
    """Every file the server loads: weights, configs, tokenizer, scheduler."""
    return sorted(p for p in checkpoint.rglob("*") if p.is_file())


def raw_read_s(files: list[Path]) -> float:
    """Seconds to read `files` into one reused buffer (what the disk + page cache can deliver)."""
    buffer = bytearray(READ_CHUNK)
    view = memoryview(buffer)
    start = time.perf_counter()
    for path in files:
        with open(path, "rb", buffering=0) as handle:
            while handle.readinto(view):
                pass
    return time.perf_counter() - start


def _log_field(server: ServerProcess, message: str, field: str) -> float | None:
    for line in reversed(server.log_tail(400).splitlines()):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("msg") == message and field in entry:
            return float(entry[field])
    return None


# What the server process imports before it can load anything (interpreter start included).
IMPORTS = ("import serving.server, serving.api, torch, transformers; "
           "from diffusers import DiffusionPipeline, StableDiffusionPipeline")


def imports_s() -> float:
    """Seconds for a fresh interpreter to import the server's stack and exit."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", IMPORTS], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"benchmarks.cpu: importing the server stack failed:\n{proc.stderr[-2000:]}")
    return elapsed


def measure_cold_start(checkpoint: Path, runs: int, dtype: str) -> dict[str, Any]:
    files = weight_files(checkpoint)
    size_bytes = sum(p.stat().st_size for p in files)
    raw_read_s(files)  # warm the page cache: both measures below are warm-cache
    reads = [raw_read_s(files) for _ in range(max(3, runs))]
    ready: list[float] = []
    load: list[float] = []
    imports: list[float] = []
    for _ in range(runs):
        # Interleaved with the server starts, so both see the same background load.
        imports.append(imports_s())
        with ServerProcess(checkpoint, device="cpu", extra_args=["--skip-warmup", "--dtype", dtype]) as server:
            ready.append(server.wait_ready(timeout=600))
            loaded = _log_field(server, "model loaded", "load_s")
            if loaded is not None:
                load.append(loaded)
    ready_s = statistics.median(ready)
    read_s = statistics.median(reads)
    return {
        "cold_start_ready_s": round(ready_s, 3),
        "cold_start_raw_read_s": round(read_s, 6),
        "cold_start_ratio": round(ready_s / read_s, 2),
        # Model load inside the server (from its "model loaded" log line); the rest is interpreter start-up and
        # imports before the load begins.
        "cold_start_load_s": round(statistics.median(load), 3) if load else None,
        # A fresh interpreter importing torch, diffusers, transformers and the server: the floor under any start.
        "cold_start_imports_s": round(statistics.median(imports), 3),
        "cold_start_runs": runs,
        "cold_start_dtype": dtype,
        "checkpoint_bytes": size_bytes,
        "raw_read_gbps": round(size_bytes / read_s / 1e9, 2),
        "page_cache": "warm (files read once before timing; dropping caches needs root)",
    }


# -------------------------------------------------------------------------------------------------------- synth


def measure_synth() -> dict[str, Any]:
    if not (REPO_ROOT / "app.py").is_file():
        raise SystemExit("benchmarks.cpu: app.py is missing, so synth_s cannot be measured; "
                         "the CDK app (build_app in app.py) must exist before `make bench`")
    env = {**os.environ, "JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION": "1",
           "PATH": os.pathsep.join([str(REPO_ROOT / "node_modules" / ".bin"), str(Path(sys.executable).parent),
                                    os.environ.get("PATH", "")])}
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as outdir:
        code = f"from app import build_app; build_app(outdir={outdir!r}).synth()"
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"benchmarks.cpu: synth failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"synth_s": round(elapsed, 3)}


# ------------------------------------------------------------------------------------------------------- output


def machine() -> dict[str, Any]:
    import torch

    # Other work on a shared machine moves every number here; the load average says how much there was.
    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "load_average_1m_at_start": round(os.getloadavg()[0], 2),
            "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
            "torch": torch.__version__}


def print_table(result: dict[str, Any]) -> None:
    rows = [
        ("HTTP overhead p50", f"{result['http_overhead_ms_p50']:.2f} ms",
         f"<= {TARGET_HTTP_OVERHEAD_MS} ms", result["http_overhead_ms_p50"] <= TARGET_HTTP_OVERHEAD_MS),
        ("  paired p50", f"{result['http_overhead_paired_ms_p50']:.2f} ms", "", None),
        ("  outside inference p50", f"{result['http_overhead_outside_inference_ms_p50']:.2f} ms", "", None),
        ("  through HTTP p50", f"{result['http_p50_ms']:.2f} ms", "", None),
        ("  direct call p50", f"{result['direct_p50_ms']:.2f} ms", "", None),
        ("cold start to /readyz", f"{result['cold_start_ready_s']:.2f} s", "", None),
        ("  of which imports", f"{result['cold_start_imports_s']:.2f} s", "", None),
        ("raw read of weights", f"{result['cold_start_raw_read_s']:.2f} s", "", None),
        ("cold start ratio", f"{result['cold_start_ratio']:.2f}x", f"<= {TARGET_COLD_START_RATIO}x",
         result["cold_start_ratio"] <= TARGET_COLD_START_RATIO),
        ("synth", f"{result['synth_s']:.1f} s" if result.get("synth_s") is not None else "skipped", "", None),
    ]
    print(f"\n{'measure':<24}{'value':>12}  {'target':<10}")
    for name, value, target, ok in rows:
        verdict = "" if ok is None else ("met" if ok else "MISSED")
        print(f"{name:<24}{value:>12}  {target:<10} {verdict}")


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    axes[0].bar(["direct", "HTTP"], [result["direct_p50_ms"], result["http_p50_ms"]], color=["#888", "#2a7"])
    axes[0].set_ylabel("p50 ms")
    axes[0].set_title(f"{result['overhead_shape']['width']}px, {result['overhead_shape']['steps']} steps: "
                      f"+{result['http_overhead_ms_p50']:.2f} ms")
    imports = min(result["cold_start_imports_s"], result["cold_start_ready_s"])
    axes[1].bar(["raw read"], [result["cold_start_raw_read_s"]], color="#888")
    axes[1].bar(["server ready"], [imports], color="#a55", label="Python imports")
    axes[1].bar(["server ready"], [result["cold_start_ready_s"] - imports], bottom=[imports], color="#27a",
                label="rest (load, listen)")
    axes[1].legend(fontsize=8)
    axes[1].set_ylabel("seconds")
    axes[1].set_title(f"cold start {result['cold_start_ratio']:.2f}x raw read")
    synth = result.get("synth_s")
    axes[2].bar(["cdk synth"], [synth or 0.0], color="#a72")
    axes[2].set_ylabel("seconds")
    axes[2].set_title("synth" if synth is not None else "synth (skipped)")
    fig.suptitle(f"edge-diffusion CPU benchmark - {result['date'][:10]}, {result['machine']['cpus']} CPUs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    print("measuring cold start...", flush=True)
    result.update(measure_cold_start(ensure_checkpoint(checkpoint, arch), runs, args.cold_start_dtype))
    if args.skip_synth:
        result["synth_s"] = None
    else:
        print("measuring synth...", flush=True)
        result.update(measure_synth())
    result["machine"]["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    result["targets"] = {
        "http_overhead_ms_p50": TARGET_HTTP_OVERHEAD_MS,
        "cold_start_ratio": TARGET_COLD_START_RATIO,
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
