"""GPU pipelines phase: plain diffusers against the server's own fast path, in one process, same weights and seeds.

    python -m benchmarks.gpu --out DIR                 # on an NVIDIA GPU (benchmarks/device_check.sh runs it)
    python -m benchmarks.gpu --out DIR --smoke         # CPU, tiny layout: the same code paths in seconds

Variants (each loaded fresh, one after the other):
- `baseline`: `DiffusionPipeline.from_pretrained` in float16, nothing else: what a plain diffusers user gets;
- `fast`: the server's exact path: `serving.backends.create_backend` with the Settings the nvidia pod builds from
  its rendered env and args (benchmarks.podenv), its warm-up for this shape, then `backend.generate`;
- approximate: `tiny-vae` (the fewest-steps case without guidance only) and `deepcache` (not run by default) are
  `fast` plus that one server flag; each row carries the mean absolute uint8 difference of its seed-0 image from
  the baseline's.

A compiled variant warms exactly the request keys of its own cases, each timed: `warmup_per_key_s` is that shape's
compile time (plus one 2-step generation).

Latency is whole generations (text encoder, every step, decode, PIL), timed with CUDA events after a synchronize;
the first call of each case is reported on its own (it shows any compile at request time). FLOPs are analytic
(benchmarks.sd21), so the fraction of peak is model FLOPs / p50 / the GPU's dense bf16 peak. Numerics switches
(TF32, cudnn.benchmark) come from serving.backends.cuda.optimize.configure_numerics, as in the server. DIR/pipelines.json is
rewritten after every case.
"""
from __future__ import annotations

import argparse
import gc
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from benchmarks import gpu_common, podenv, sd21
from benchmarks.gpu_common import Case, ResultFile


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    exact: bool
    # Server settings added to the pod's for this variant (callable: they may name a model file).
    overrides: Callable[[gpu_common.ModelFiles], dict[str, Any]] | None
    # The variant's cases out of the matrix (None: all); its warm-up covers exactly those.
    pick: Callable[[list[Case]], list[Case]] | None = None

    def cases(self, matrix: list[Case]) -> list[Case]:
        return self.pick(matrix) if self.pick else list(matrix)


def _fewest_steps_no_cfg(matrix: list[Case]) -> list[Case]:
    fewest = min(c.steps for c in matrix)
    return [c for c in matrix if c.steps == fewest and not c.cfg]


VARIANTS = {v.name: v for v in (
    Variant("baseline", "plain diffusers, float16, no optimization", exact=True, overrides=None),
    Variant("fast", "the server's path with the nvidia pod's settings", exact=True, overrides=lambda m: {}),
    Variant("tiny-vae", "fast + --tiny-vae (approximate decode), fewest steps without CFG", exact=False,
            overrides=lambda m: {"tiny_vae": str(m.tiny_vae)}, pick=_fewest_steps_no_cfg),
    Variant("deepcache", "fast + --deepcache-interval 3 (approximate reuse)", exact=False,
            overrides=lambda m: {"deepcache_interval": 3}),
)}
# DeepCache is not among the device check's cases; --variants adds it.
DEFAULT_VARIANTS = ["baseline", "fast", "tiny-vae"]

Generate = Callable[[Case, int], Any]  # (case, seed) -> PIL image


def csv_ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def csv_variants(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    if "baseline" not in names:
        names.insert(0, "baseline")  # speed-ups and image differences are against the baseline of the same run
    return names


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """Flags every phase shares (benchmarks.gpu_e2e uses them too)."""
    p.add_argument("--smoke", action="store_true", help="CPU, tiny layout: checks the code paths only")
    p.add_argument("--out", type=Path, required=True, help="directory for the phase's JSON")
    p.add_argument("--work", type=Path, default=Path("/tmp/edge-bench"),
                   help="scratch directory: the random checkpoint, the tiny VAE, the compile cache")
    p.add_argument("--pod", type=Path, default=podenv.DEFAULT_PATH,
                   help="the pod's rendered server settings (make gpu-wheels writes it)")
    p.add_argument("--size", type=int, default=None, help="image side (default 512; smoke 64)")
    p.add_argument("--steps", type=csv_ints, default=None, help="step counts (default 1,25; smoke 1)")
    p.add_argument("--cfg", choices=("both", "on", "off"), default="both", help="classifier-free guidance cases")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    add_common_arguments(p)
    p.add_argument("--variants", type=csv_variants, default=None, help=f"subset of {', '.join(VARIANTS)}")
    p.add_argument("--iters", type=int, default=None, help="timed calls per case (default 10; smoke 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls per case, the first included "
                   "(default 2; smoke 1)")
    return p


def matrix(args: argparse.Namespace) -> list[Case]:
    size = args.size or (gpu_common.SMOKE_SIZE if args.smoke else gpu_common.GPU_SIZE)
    if size % 8:
        raise SystemExit(f"--size {size} is not a multiple of 8")
    steps = args.steps or ([1] if args.smoke else [1, 25])
    cfgs = {"both": [True, False], "on": [True], "off": [False]}[args.cfg]
    return gpu_common.cases(size, steps, cfgs)


def _timed(device: str, call: Callable[[], Any]) -> tuple[float, Any]:
    if device != "cuda":
        t0 = time.perf_counter()
        out = call()
        return (time.perf_counter() - t0) * 1000, out
    import torch

    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    out = call()
    end.record()
    end.synchronize()
    return start.elapsed_time(end), out


def time_case(generate: Generate, case: Case, device: str, warmup: int, iters: int) -> tuple[dict[str, Any], Any]:
    """(row fields, the seed-0 image). The first call uses seed 0 and is reported on its own."""
    first_ms, image = _timed(device, lambda: generate(case, 0))
    for i in range(1, warmup):
        generate(case, i)
    times = [_timed(device, lambda s=seed: generate(case, s))[0] for seed in range(warmup, warmup + iters)]
    return {"first_call_ms": round(first_ms, 3), **gpu_common.latency_stats(times)}, image


def mean_abs_diff(image: Any, reference: Any) -> float:
    """Mean absolute difference of two same-size RGB images, in uint8 levels (0..255)."""
    import numpy as np

    a, b = np.asarray(image.convert("RGB"), dtype=np.int16), np.asarray(reference.convert("RGB"), dtype=np.int16)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    return round(float(np.abs(a - b).mean()), 4)


def load_baseline(models: gpu_common.ModelFiles, device: str) -> tuple[Generate, dict[str, Any]]:
    import torch
    from diffusers import DiffusionPipeline

    dtype = torch.float32 if device == "cpu" else torch.float16
    pipe = DiffusionPipeline.from_pretrained(models.checkpoint, dtype=dtype, local_files_only=True).to(device)
    pipe.set_progress_bar_config(disable=True)

    def generate(case: Case, seed: int) -> Any:
        with torch.inference_mode():
            return pipe(prompt=gpu_common.PROMPT, negative_prompt="" if case.cfg else None, width=case.size,
                        height=case.size, num_inference_steps=case.steps,
                        guidance_scale=gpu_common.CFG_SCALE if case.cfg else 0.0,
                        generator=torch.Generator("cpu").manual_seed(seed), output_type="pil").images[0]

    return generate, {"dtype": str(dtype).removeprefix("torch.")}


def load_server_path(settings: Any, cases: list[Case] | None = None) -> tuple[Generate, dict[str, Any]]:
    """The server's backend for `settings`, warmed up as the server warms it before reporting ready; with a shape
    policy (cuda with compile) exactly the request keys of `cases`, each timed (its compile time)."""
    from serving.backends import GenerationParams, create_backend

    t0 = time.perf_counter()
    backend = create_backend(settings)
    loaded = time.perf_counter()
    if getattr(backend, "policy", None) is not None and cases:
        from serving.backends.cuda.shapes import request_key

        keys = list(dict.fromkeys(request_key(c.size, c.size, gpu_common.CFG_SCALE if c.cfg else 0.0, 1)
                                  for c in cases))
        backend.warmup(settings.warmup_shapes, keys=keys)
    else:
        backend.warmup(settings.warmup_shapes)
    precompiled = getattr(getattr(backend, "policy", None), "precompiled", None)
    info = {"backend": backend.name, "load_s": round(loaded - t0, 3),
            "warmup_s": round(time.perf_counter() - loaded, 3),
            "warmup_sizes": settings.warmup_sizes,
            # Per warmed request key: the compile (and first run) of that shape; empty when nothing compiles.
            "warmup_per_key_s": dict(getattr(backend, "warmup_seconds", {}) or {}),
            # Compiled functions loaded from the compile cache instead of compiled (serving.backends.cuda.precompiled).
            "functions_loaded": len(precompiled.load_seconds) if precompiled is not None else 0}

    def generate(case: Case, seed: int) -> Any:
        params = GenerationParams(prompt=gpu_common.PROMPT, width=case.size, height=case.size, steps=case.steps,
                                  guidance_scale=gpu_common.CFG_SCALE if case.cfg else 0.0, seed=seed,
                                  negative_prompt="" if case.cfg else None)
        return backend.generate(params, threading.Event())[0]

    return generate, info


def _settings_summary(settings: Any) -> dict[str, Any]:
    keys = ("device", "dtype", "compile", "compile_mode", "cuda_graphs", "tiny_vae", "deepcache_interval",
            "max_concurrency", "warmup_sizes", "compile_cache_dir")
    return {k: getattr(settings, k) for k in keys if hasattr(settings, k)}


def _graphs_compiled() -> int:
    """Graphs Dynamo has compiled in this process (torch._dynamo.reset() leaves the counter alone)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def _free(device: str) -> None:
    import torch

    gc.collect()
    # A sealed variant set Dynamo's process-wide stance to eager_on_recompile ("run mode": cached code only, never a
    # compile), and reset() clears the caches but not the stance (torch/_dynamo/__init__.py reset,
    # torch/_dynamo/eval_frame.py _callback_from_stance): without this the next variant would never compile.
    torch.compiler.set_stance("default")
    torch._dynamo.reset()
    if device == "cuda":
        torch.cuda.empty_cache()


def run(args: argparse.Namespace) -> Path:
    from serving.backends.cuda.optimize import configure_numerics

    device = "cpu" if args.smoke else "cuda"
    found = gpu_common.versions()  # this process imports everything anyway: what it actually loaded
    if device == "cuda":
        gpu_common.require_cuda("benchmarks.gpu", found)
    cases = matrix(args)
    variants = args.variants or DEFAULT_VARIANTS
    iters = args.iters or (2 if args.smoke else 10)
    warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 2)
    if iters < 1 or warmup < 1:
        raise SystemExit("--iters and --warmup must be >= 1 (the first call is the seed-0 reference image)")
    pod = podenv.load(args.pod)
    gpu = gpu_common.gpu_label(args.smoke, found)
    model, peak = gpu_common.peak_bf16_tflops(gpu) if device == "cuda" else (None, None)
    numerics = configure_numerics(device)
    models = gpu_common.ensure_models(args.work, args.smoke)
    arch = sd21.get_spec(models.arch)
    result = ResultFile(args.out / "pipelines.json", {
        "phase": "pipelines", "smoke": args.smoke, "device": device, "gpu": gpu, "gpu_model": model,
        "peak_bf16_dense_tflops": peak, "arch": arch.name, "versions": found, "numerics": numerics,
        "pod_deviations": pod.get("deviations") or {}, "iters": iters, "warmup": warmup,
        "cases": [c.key() for c in cases],
        "variants": {n: {"description": VARIANTS[n].description, "exact": VARIANTS[n].exact} for n in variants},
        "rows": [], "errors": []})
    references: dict[Case, Any] = {}
    for name in variants:
        variant = VARIANTS[name]
        graphs_before = _graphs_compiled()
        try:
            if variant.overrides is None:
                generate, info = load_baseline(models, device)
            else:
                # The e2e server's compile cache directory: this process finds its artifacts as a later pod would.
                settings = podenv.settings(pod, models.checkpoint, device, cases[0].size,
                                           compile_cache_dir=str(args.work / "compile-cache"),
                                           **variant.overrides(models))
                generate, info = load_server_path(settings, variant.cases(cases))
                info["settings"] = _settings_summary(settings)
        except Exception as exc:  # noqa: BLE001 - one variant failing must not cost the others
            result.append("errors", {"variant": name, "stage": "load", "error": f"{type(exc).__name__}: {exc}"})
            print(f"{name:>10} failed to load: {type(exc).__name__}: {exc}", flush=True)
            _free(device)
            continue
        loaded_graphs = _graphs_compiled()
        result.data["variants"][name].update(info)
        for case in variant.cases(cases):
            try:
                stats, image = time_case(generate, case, device, warmup, iters)
            except Exception as exc:  # noqa: BLE001
                result.append("errors", {"variant": name, **case.key(), "stage": "generate",
                                         "error": f"{type(exc).__name__}: {exc}"})
                print(f"{name:>10} {case.label}: {type(exc).__name__}: {exc}", flush=True)
                continue
            if name == "baseline":
                references[case] = image
            tflop = (sd21.generation_tflop(case.size, case.steps, case.cfg) if arch.name == "sd21"
                     and case.size in sd21.UNET_TFLOP_PER_SAMPLE_STEP
                     else sd21.counted_generation_tflop(arch, case.size, case.steps, case.cfg))
            achieved = tflop / (stats["p50_ms"] / 1000)
            row = {"variant": name, "exact": variant.exact, **case.key(), **stats, "tflop": round(tflop, 6),
                   "achieved_tflops": round(achieved, 6),
                   "fraction_of_peak": round(achieved / peak, 4) if peak else None,
                   "mean_abs_diff_vs_baseline": (mean_abs_diff(image, references[case])
                                                 if name != "baseline" and case in references else None)}
            result.append("rows", row)
            print(f"{name:>10} {case.label:<22} p50 {stats['p50_ms']:9.2f} ms  first {stats['first_call_ms']:9.1f} ms"
                  + (f"  diff {row['mean_abs_diff_vs_baseline']}" if row["mean_abs_diff_vs_baseline"] is not None
                     else ""), flush=True)
        compiled = {"warmup": loaded_graphs - graphs_before, "requests": _graphs_compiled() - loaded_graphs}
        result.data["variants"][name]["graphs_compiled"] = compiled
        result.write()
        # The cuda backend compiles with compile on; the CPU backend of --smoke ignores the flag.
        if (info.get("backend") == "cuda" and info.get("settings", {}).get("compile") and not compiled["warmup"]
                and not info.get("functions_loaded")):
            result.append("errors", {"variant": name, "stage": "compile",
                                     "error": "compile is on but Dynamo compiled no graph: its rows are eager"})
        del generate  # the last reference to the pipeline or backend, before the next variant loads
        _free(device)
    return result.path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        path = run(args)
    except podenv.PodEnvError as exc:
        raise SystemExit(f"benchmarks.gpu: {exc}") from None
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
