"""Warm-cache start on CPU, inductor as the proxy for the GPU: what a start spends per warmed shape with and without
the compile cache, and with the cache in each of its two forms.

    python -m benchmarks.warmstart                      # writes benchmarks/results/warmstart-cpu.json
    python -m benchmarks.warmstart --size 64 --max-images 1

Every start is a fresh process. Each builds the server's cuda backend class on a CPU pipeline (the tiny
random-weight model, float32, `--compile` in mode default), loads the compile cache, runs the server's warm-up
(every size x guidance off/on x 1..max-images) and reports: seconds to import, to load the pipeline, to load the
cache (per ahead-of-time function), per warmed shape, and Dynamo's counters (frames traced, graphs compiled).

The starts, in order:
- `cold`: empty compile cache and inductor cache directory (TORCHINDUCTOR_CACHE_DIR), ahead-of-time compile on
  (what the first pod of a key does); it fills compile cache A.
- `warm`: compile cache A, and the inductor directory the cold start left (the kernels' binaries are there, as
  on a GPU, where inductor bundles the Triton kernels into the cached graphs): the ahead-of-time functions are
  loaded, nothing is traced.
- `warm-fresh-node`: compile cache A with an empty inductor directory: on CPU every C++ kernel of the loaded code
  is rebuilt with the host compiler (no such step on a GPU, see above); the worst case of this proxy.
- `cold-jit` and `warm-jit`: as `cold` and `warm` with ahead-of-time compile off, i.e. the mega-cache alone (the
  behaviour before serving/backends/cuda/precompiled.py): the warm start still traces every shape.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULT = REPO_ROOT / "benchmarks" / "results" / "warmstart-cpu.json"
MODEL = REPO_ROOT / ".cache" / "tiny-model"
# (name, compile cache, inductor cache directory, ahead-of-time functions on)
STARTS = (("cold", "a", "a", True), ("warm", "a", "a", True), ("warm-fresh-node", "a", "fresh", True),
          ("cold-jit", "b", "b", False), ("warm-jit", "b", "b", False))


def one_start(model: Path, cache_dir: Path, size: int, max_images: int, precompiled: bool) -> dict[str, Any]:
    """One start in this process (a fresh one): the numbers above, as a dict."""
    t0 = time.perf_counter()
    import torch
    from torch._dynamo.utils import counters

    from serving.backends.base import GenerationParams
    from serving.backends.cuda.backend import WARMUP_GUIDANCE, WARMUP_STEPS, CudaBackend, precompile
    from serving.backends.cuda.compilecache import CompileCache, key_fields
    from serving.backends.cuda.optimize import CudaOptions, optimize_pipeline
    from serving.backends.cuda.shapes import EAGER, key_label, warmed_keys
    from serving.model.config import ModelDefaults
    from serving.model.loading import load_pipeline

    torch.set_num_threads(max(1, (os.cpu_count() or 2)))
    imported = time.perf_counter()
    options = CudaOptions(dtype="float32", compile=True, compile_mode="default")
    pipe = optimize_pipeline(load_pipeline(str(model), "cpu", "float32"), options, default_mode=EAGER)
    backend = CudaBackend(pipe, ModelDefaults(width=size, height=size, steps=2, guidance_scale=0.0),
                          max_images=max_images)
    sizes = [(size, size)]
    backend.compile_cache = CompileCache(
        key_fields("cpu", "default", warmed_keys(sizes, max_images), dict(options.__dict__), dict(pipe.unet.config)),
        str(cache_dir))
    if precompiled:
        backend.compile_cache.precompiled = precompile(backend.policy, options, "cpu")
    loaded = time.perf_counter()
    hit = backend.compile_cache.load()
    cache_loaded = time.perf_counter()
    backend.warmup(sizes)
    done = time.perf_counter()
    # The same generations once more, now served from the warmed code: what warm-up costs beyond the work itself.
    steady = {}
    for key in warmed_keys(sizes, max_images):
        params = GenerationParams(prompt="warm-up", width=key[0], height=key[1], steps=WARMUP_STEPS,
                                  guidance_scale=WARMUP_GUIDANCE if key[2] else 0.0, seed=0, n=key[3])
        started = time.perf_counter()
        backend.generate(params, threading.Event())
        steady[key_label(key)] = round(time.perf_counter() - started, 3)
    functions = backend.policy.precompiled.load_seconds if backend.policy.precompiled is not None else []
    return {
        "import_s": round(imported - t0, 3), "pipeline_s": round(loaded - imported, 3),
        "cache_hit": hit, "cache_load_s": round(cache_loaded - loaded, 3),
        "function_load_s": [s for _, s in functions], "warmup_s": round(done - cache_loaded, 3),
        "warmup_per_key_s": backend.warmup_seconds, "steady_per_key_s": steady,
        "warmup_beyond_steady_s": round(sum(backend.warmup_seconds.values()) - sum(steady.values()), 3),
        "start_s": round(done - t0, 3),
        "frames_traced": counters["frames"]["total"], "graphs_compiled": counters["stats"]["unique_graphs"],
        "fxgraph_cache_hit": counters["inductor"]["fxgraph_cache_hit"],
        "fxgraph_cache_miss": counters["inductor"]["fxgraph_cache_miss"],
        "torch": torch.__version__,
    }


def run(size: int, max_images: int, out: Path, starts: list[str], workdir: Path | None = None) -> dict[str, Any]:
    from benchmarks.gpu_common import ResultFile

    if not (MODEL / "model_index.json").is_file():
        from serving.model.tiny import write_tiny_model

        write_tiny_model(MODEL)
    result = ResultFile(out, {"benchmark": "warm-cache start, CPU with inductor as the proxy", "size": size,
                              "max_images": max_images, "warmed_keys": 2 * max_images,
                              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                          "python": platform.python_version()},
                              "command": f"python -m benchmarks.warmstart --size {size} --max-images {max_images} "
                                         f"--starts {','.join(starts)}",
                              "starts": {}})
    plan = {s[0]: s for s in STARTS}
    unknown = [name for name in starts if name not in plan]
    if unknown:
        raise SystemExit(f"--starts: unknown {unknown}; choose from {', '.join(plan)}")
    with tempfile.TemporaryDirectory(prefix="warmstart-") as scratch:
        tmp = str(workdir or scratch)
        for index, (kind, cache, inductor, precompiled) in enumerate(plan[name] for name in starts):
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(Path(tmp) / f"inductor-{inductor}"),
                   "PYTHONPATH": str(REPO_ROOT)}
            command = [sys.executable, "-m", "benchmarks.warmstart", "--one", str(Path(tmp) / f"cache-{cache}"),
                       "--size", str(size), "--max-images", str(max_images)] + (["--jit"] if not precompiled else [])
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT, check=False)
            label = kind if kind not in result.data["starts"] else f"{kind}#{index}"
            if done.returncode != 0:
                result.data["starts"][label] = {"error": done.stderr[-2000:]}
            else:
                result.data["starts"][label] = {**json.loads(done.stdout.strip().splitlines()[-1]),
                                                "process_s": round(time.perf_counter() - started, 3)}
            result.write()
            print(label, json.dumps(result.data["starts"][label]), flush=True)
    return result.data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.warmstart", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--max-images", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULT)
    p.add_argument("--starts", default=",".join(s[0] for s in STARTS),
                   help="which starts, in this order (comma-separated, repeats allowed): "
                   + ", ".join(s[0] for s in STARTS))
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep the caches here (default: a temporary directory), so warm starts can be rerun")
    p.add_argument("--one", type=Path, default=None, help=argparse.SUPPRESS)  # one start, in this process
    p.add_argument("--jit", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one is not None:
        print(json.dumps(one_start(MODEL, args.one, args.size, args.max_images, precompiled=not args.jit)))
        return 0
    run(args.size, args.max_images, args.out, args.starts.split(","), args.workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
