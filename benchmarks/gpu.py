"""GPU benchmark: plain diffusers vs the server's optimized cuda path (serving.optimize) on SD 2.1 random weights.

    python -m benchmarks.gpu                   # on an NVIDIA GPU: writes benchmarks/results/<gpu-name>.json + .png
    python -m benchmarks.gpu --e2e             # same, plus the server itself over HTTP with the best exact settings
    python -m benchmarks.gpu --smoke           # CPU, tiny model: the same code paths in seconds (tested in CI)

Latency is the p50 of whole pipeline calls (text encoder, every UNet step, VAE decode, PIL conversion), timed with
CUDA events after a synchronize. FLOPs are analytic (benchmarks.sd21), so "fraction of peak" is model FLOPs over
p50 time over the GPU's dense bf16 tensor peak.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import platform
import re
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import sd21

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
SMOKE_DIR = REPO_ROOT / ".cache" / "bench-smoke"
PROMPT = "a photograph of an astronaut riding a horse on the moon, detailed, 8k"
CFG_SCALE = 7.5

# Dense (no 2:4 sparsity) BF16 tensor-core peaks from NVIDIA's datasheets; A10G (AWS-only part) from AWS/Baseten's
# A10 vs A10G comparison. First match wins, so the more specific names come first.
PEAK_BF16_DENSE_TFLOPS: list[tuple[str, str, float]] = [
    (r"H200 NVL", "H200 NVL", 835.5),
    (r"H200", "H200 SXM", 989.4),
    (r"H100 NVL", "H100 NVL", 835.5),
    (r"H100 PCIe", "H100 PCIe", 756.5),
    (r"H100", "H100 SXM", 989.4),
    (r"A100", "A100", 312.0),
    (r"A10G", "A10G", 70.0),
    (r"\bL4\b", "L4", 121.0),
]


def peak_bf16_tflops(gpu_name: str) -> tuple[str | None, float | None]:
    """(matched model, dense bf16 TFLOPS) for a torch.cuda.get_device_name() string; (None, None) if unknown."""
    for pattern, model, peak in PEAK_BF16_DENSE_TFLOPS:
        if re.search(pattern, gpu_name, flags=re.IGNORECASE):
            return model, peak
    return None, None


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    exact: bool  # False when the images differ by more than rounding (tiny VAE, DeepCache reuse)
    cuda_only: bool = False


VARIANTS = {
    v.name: v
    for v in (
        Variant("diffusers", "plain diffusers pipeline in --dtype (the baseline)", exact=True),
        Variant("eager", "serving.optimize: SDPA, fused QKV, channels_last", exact=True),
        Variant("eager-bf16", "as eager, bfloat16 weights", exact=True),
        Variant("cuda-graphs", "eager + our CUDA-graph capture of the UNet", exact=True, cuda_only=True),
        Variant("compile", "eager + torch.compile max-autotune (no CUDA graphs)", exact=True),
        Variant("compile-graphs", "eager + torch.compile max-autotune with inductor CUDA graphs", exact=True,
                cuda_only=True),
        Variant("tiny-vae", "compile-graphs + tiny VAE (TAESD layout) decode", exact=False, cuda_only=True),
        Variant("deepcache", "eager + DeepCache reuse every 3 steps", exact=False),
    )
}
GPU_VARIANTS = list(VARIANTS)
SMOKE_VARIANTS = ["diffusers", "eager", "deepcache"]


def variant_options(name: str, dtype: str, tiny_vae_dir: str | None) -> Any:
    """The CudaOptions a variant runs with; None for the plain diffusers baseline."""
    from serving.optimize import CudaOptions

    return {
        "diffusers": None,
        "eager": CudaOptions(dtype=dtype),
        "eager-bf16": CudaOptions(dtype="bfloat16"),
        "cuda-graphs": CudaOptions(dtype=dtype, cuda_graphs=True),
        "compile": CudaOptions(dtype=dtype, compile=True),
        "compile-graphs": CudaOptions(dtype=dtype, compile=True, cuda_graphs=True),
        "tiny-vae": CudaOptions(dtype=dtype, compile=True, cuda_graphs=True, tiny_vae=tiny_vae_dir),
        "deepcache": CudaOptions(dtype=dtype, deepcache_interval=3),
    }[name]


def server_flags(options: Any) -> list[str]:
    """`python -m serving serve` flags that make the cuda backend apply `options` (contract 5)."""
    if options is None:
        return []
    flags = ["--dtype", options.dtype]
    if options.compile:
        flags.append("--compile")
    if options.cuda_graphs:
        flags.append("--cuda-graphs")
    if options.tiny_vae:
        flags += ["--tiny-vae", options.tiny_vae]
    if options.deepcache_interval:
        flags += ["--deepcache-interval", str(options.deepcache_interval)]
    return flags


def _csv_ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _csv_variants(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    if "diffusers" not in names:
        names.insert(0, "diffusers")  # the speed-up is always against the baseline of the same run
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="CPU, tiny model, tiny shapes: checks the code paths only")
    p.add_argument("--sizes", type=_csv_ints, help="image sizes (default 512,768; smoke 64)")
    p.add_argument("--steps", type=_csv_ints, help="step counts (default 1,4,25; smoke 1,2)")
    p.add_argument("--cfg", choices=("both", "on", "off"), default="both", help="classifier-free guidance cases")
    p.add_argument("--variants", type=_csv_variants, help=f"comma-separated subset of {', '.join(VARIANTS)}")
    p.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default=None,
                   help="weights dtype of the baseline and variants (default float16; smoke float32, since CPU "
                   "half-precision kernels would time the CPU, not the code path)")
    p.add_argument("--iters", type=int, default=None, help="timed runs per case (default 10; smoke 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs per case (default 3; smoke 1)")
    p.add_argument("--e2e", action="store_true",
                   help="also time the real server over HTTP with the best exact variant's flags")
    p.add_argument("--e2e-requests", type=int, default=None, help="timed HTTP requests per case (default 20)")
    p.add_argument("--out", type=Path, default=None, help="output directory (default benchmarks/results; "
                   "smoke .cache/bench-smoke)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    return p


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _call_kwargs(size: int, steps: int, cfg: bool) -> dict[str, Any]:
    return {
        "prompt": PROMPT,
        "negative_prompt": "" if cfg else None,
        "width": size,
        "height": size,
        "num_inference_steps": steps,
        "guidance_scale": CFG_SCALE if cfg else 0.0,
        "output_type": "pil",
    }


def time_pipeline(pipe: Any, device: str, size: int, steps: int, cfg: bool, iters: int, warmup: int) -> list[float]:
    """Milliseconds per whole pipeline call; CUDA events on a GPU, perf_counter on CPU."""
    import torch

    kwargs = _call_kwargs(size, steps, cfg)
    times: list[float] = []
    with torch.inference_mode():
        for i in range(warmup + iters):
            generator = torch.Generator("cpu").manual_seed(i)
            if device == "cuda":
                torch.cuda.synchronize()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                pipe(**kwargs, generator=generator)
                end.record()
                end.synchronize()
                elapsed = start.elapsed_time(end)
            else:
                t0 = time.perf_counter()
                pipe(**kwargs, generator=generator)
                elapsed = (time.perf_counter() - t0) * 1000
            if i >= warmup:
                times.append(elapsed)
    return times


def component_tflop(arch: sd21.ArchSpec, size: int, steps: int, cfg: bool) -> float:
    """Analytic TFLOP per generation: the issue's SD 2.1 constants, or a meta-device count for other layouts."""
    if arch.name == "sd21":
        return sd21.generation_tflop(size, steps, cfg)
    return sd21.counted_generation_tflop(arch, size, steps, cfg)


def _free(pipe: Any, device: str) -> None:
    import torch

    del pipe
    gc.collect()
    torch._dynamo.reset()
    if device == "cuda":
        torch.cuda.empty_cache()


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from serving.optimize import optimize_pipeline

    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmarks.gpu: torch sees no CUDA device; run on an NVIDIA GPU, or pass --smoke for the "
                         "CPU code-path check")
    arch = sd21.TINY if args.smoke else sd21.SD21
    sizes = args.sizes or ([64] if args.smoke else [512, 768])
    # Two smoke steps are enough to take DeepCache through a full and a shallow UNet call.
    steps_list = args.steps or ([1, 2] if args.smoke else [1, 4, 25])
    cfgs = {"both": [False, True], "on": [True], "off": [False]}[args.cfg]
    variants = args.variants or (SMOKE_VARIANTS if args.smoke else GPU_VARIANTS)
    dtype = args.dtype or ("float32" if args.smoke else "float16")
    if dtype == "float32" and device == "cuda":
        raise SystemExit("benchmarks.gpu: --dtype float32 is not a GPU serving dtype; use float16 or bfloat16")
    iters = args.iters or (2 if args.smoke else 10)
    warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 3)
    if iters < 1 or warmup < 0:
        raise SystemExit("benchmarks.gpu: --iters must be >= 1 and --warmup >= 0")
    for name in variants:
        if VARIANTS[name].cuda_only and device != "cuda":
            raise SystemExit(f"benchmarks.gpu: variant {name!r} needs a CUDA device; drop it from --variants")
    for size in sizes:
        if size % 8:
            raise SystemExit(f"benchmarks.gpu: size {size} is not a multiple of 8")
        if not args.smoke and size not in sd21.UNET_TFLOP_PER_SAMPLE_STEP:
            raise SystemExit(f"benchmarks.gpu: size {size} has no analytic FLOP count; use 512 and/or 768")

    if device == "cuda":
        gpu_name = torch.cuda.get_device_name(0)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    else:
        gpu_name = f"cpu ({platform.processor() or platform.machine()})"
    model, peak = peak_bf16_tflops(gpu_name) if device == "cuda" else (None, None)
    workdir = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    tiny_vae_dir = str(sd21.write_tiny_vae(arch, workdir / "tiny-vae")) if "tiny-vae" in variants else None

    rows: list[dict[str, Any]] = []
    for name in variants:
        options = variant_options(name, dtype, tiny_vae_dir)
        pipe = sd21.build_pipeline(arch, device=device, dtype=sd21.torch_dtype(dtype), seed=0)
        if options is not None:
            optimize_pipeline(pipe, options)
        for size in sizes:
            for cfg in cfgs:
                for steps in steps_list:
                    times = time_pipeline(pipe, device, size, steps, cfg, iters, warmup)
                    p50 = statistics.median(times)
                    tflop = component_tflop(arch, size, steps, cfg)
                    achieved = tflop / (p50 / 1000)
                    rows.append({
                        "variant": name, "exact": VARIANTS[name].exact, "size": size, "steps": steps, "cfg": cfg,
                        "options": asdict(options) if options is not None else None,
                        "p50_ms": round(p50, 3), "p90_ms": round(_percentile(times, 90), 3),
                        "min_ms": round(min(times), 3), "iters": len(times),
                        "tflop": round(tflop, 6), "achieved_tflops": round(achieved, 6),
                        "fraction_of_peak": round(achieved / peak, 4) if peak else None,
                    })
                    print(f"{name:>15} {size:>4}px {steps:>2} steps cfg={'on ' if cfg else 'off'} "
                          f"p50 {p50:9.2f} ms", flush=True)
        _free(pipe, device)

    summary = summarize(rows)
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "smoke": bool(args.smoke),
        "device": device,
        "gpu": gpu_name,
        "gpu_model": model,
        "peak_bf16_dense_tflops": peak,
        "arch": arch.name,
        "dtype": dtype,
        "versions": _versions(),
        "flop_source": "benchmarks.sd21 analytic constants" if arch.name == "sd21" else "meta-device count",
        "results": rows,
        "summary": summary,
    }
    if args.e2e:
        result["e2e"] = run_e2e(args, arch, device, dtype, sizes, steps_list, cfgs, summary, workdir, tiny_vae_dir)
    return result


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per case: baseline p50, the best exact and best overall variants, and their speed-ups."""
    cases: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        cases.setdefault((row["size"], row["steps"], row["cfg"]), []).append(row)
    out = []
    for (size, steps, cfg), items in cases.items():
        base = next(r for r in items if r["variant"] == "diffusers")
        exact = min((r for r in items if r["exact"]), key=lambda r: r["p50_ms"])
        best = min(items, key=lambda r: r["p50_ms"])
        out.append({
            "size": size, "steps": steps, "cfg": cfg,
            "baseline_p50_ms": base["p50_ms"],
            "best_exact_variant": exact["variant"], "best_exact_p50_ms": exact["p50_ms"],
            "speedup_exact": round(base["p50_ms"] / exact["p50_ms"], 3),
            "best_exact_fraction_of_peak": exact["fraction_of_peak"],
            "best_variant": best["variant"], "best_p50_ms": best["p50_ms"],
            "speedup_best": round(base["p50_ms"] / best["p50_ms"], 3),
        })
    return out


def run_e2e(args: argparse.Namespace, arch: sd21.ArchSpec, device: str, dtype: str, sizes: list[int],
            steps_list: list[int], cfgs: list[bool], summary: list[dict[str, Any]], workdir: Path,
            tiny_vae_dir: str | None) -> dict[str, Any]:
    """Serve a random checkpoint with the best exact variant's flags and time the cases over HTTP."""
    from benchmarks.serverproc import GenerateClient, ServerProcess

    votes: dict[str, int] = {}
    for case in summary:
        votes[case["best_exact_variant"]] = votes.get(case["best_exact_variant"], 0) + 1
    chosen = max(votes, key=votes.get)
    options = variant_options(chosen, dtype, tiny_vae_dir)
    # The CPU backend has no cuda options: the smoke run checks the HTTP plumbing only.
    flags = server_flags(options) if device == "cuda" else []
    checkpoint = sd21.write_random_checkpoint(workdir / "checkpoint", arch)
    requests = args.e2e_requests or (2 if args.smoke else 20)
    out: dict[str, Any] = {"variant": chosen, "server_flags": flags, "requests": requests, "cases": []}
    max_size = max(sizes)
    with ServerProcess(checkpoint, device=device,
                       extra_args=[*flags, "--request-timeout", "600", "--max-image-size", str(max(max_size, 64)),
                                   "--min-image-size", str(min(min(sizes), 64))]) as server:
        out["ready_s"] = round(server.wait_ready(timeout=1800), 3)
        client = GenerateClient(server.port)
        try:
            for size in sizes:
                for cfg in cfgs:
                    for steps in steps_list:
                        body = {"prompt": PROMPT, "width": size, "height": size, "num_inference_steps": steps,
                                "guidance_scale": CFG_SCALE if cfg else 0.0, "seed": 0}
                        if cfg:
                            body["negative_prompt"] = ""
                        for _ in range(1 if args.smoke else 3):  # compile / graph capture for this shape
                            client.generate(body)
                        times = [client.generate(body)[0] * 1000 for _ in range(requests)]
                        out["cases"].append({"size": size, "steps": steps, "cfg": cfg,
                                             "http_p50_ms": round(statistics.median(times), 3)})
        finally:
            client.close()
    return out


def _versions() -> dict[str, str | None]:
    import diffusers
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "diffusers": diffusers.__version__, "transformers": transformers.__version__}


def write_outputs(result: dict[str, Any], out_dir: Path, plot: bool = True) -> tuple[Path, Path | None]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = ("smoke-" if result["smoke"] else "") + slug(result["gpu_model"] or result["gpu"])
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    png_path = None
    if plot:
        png_path = out_dir / f"{stem}.png"
        plot_results(result, png_path)
    return json_path, png_path


def plot_results(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["results"]
    sizes = sorted({r["size"] for r in rows})
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, axes = plt.subplots(1, len(sizes), figsize=(7 * len(sizes), 4.5), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        cases = sorted({(r["steps"], r["cfg"]) for r in rows if r["size"] == size})
        width = 0.8 / len(variants)
        for i, variant in enumerate(variants):
            values = []
            for steps, cfg in cases:
                match = [r["p50_ms"] for r in rows
                         if (r["size"], r["steps"], r["cfg"], r["variant"]) == (size, steps, cfg, variant)]
                values.append(match[0] if match else 0.0)
            ax.bar([c + i * width for c in range(len(cases))], values, width, label=variant)
        ax.set_xticks([c + 0.4 - width / 2 for c in range(len(cases))])
        ax.set_xticklabels([f"{s} steps\n{'CFG' if cfg else 'no CFG'}" for s, cfg in cases])
        ax.set_yscale("log")
        ax.set_ylabel("p50 latency (ms, log)")
        ax.set_title(f"{size}x{size}")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"SD 2.1 ({result['arch']}) on {result['gpu']} - {result['date'][:10]}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_summary(result: dict[str, Any]) -> None:
    print(f"\n{result['gpu']}  (peak bf16 dense: {result['peak_bf16_dense_tflops'] or 'unknown'} TFLOPS)")
    print(f"{'case':<22}{'baseline':>12}{'best exact':>26}{'speed-up':>10}{'of peak':>9}")
    for case in result["summary"]:
        label = f"{case['size']}px {case['steps']} st {'CFG' if case['cfg'] else 'noCFG'}"
        frac = case["best_exact_fraction_of_peak"]
        print(f"{label:<22}{case['baseline_p50_ms']:>10.1f}ms"
              f"{case['best_exact_variant']:>15} {case['best_exact_p50_ms']:>8.1f}ms"
              f"{case['speedup_exact']:>9.2f}x{(f'{frac:.1%}' if frac is not None else 'n/a'):>9}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out_dir = args.out or (SMOKE_DIR if args.smoke else RESULTS_DIR)
    result = run(args)
    json_path, png_path = write_outputs(result, out_dir, plot=not args.no_plot)
    print_summary(result)
    print(f"\nwrote {json_path}" + (f" and {png_path}" if png_path else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
