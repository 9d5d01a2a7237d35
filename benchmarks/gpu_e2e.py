"""GPU server phases: the real server, configured as the nvidia pod, measured through HTTP.

    python -m benchmarks.gpu_e2e e2e --out DIR                # the matrix through POST /generate -> DIR/e2e.json
    python -m benchmarks.gpu_e2e e2e --tiny-vae --out DIR     # the same with --tiny-vae -> DIR/e2e-tiny-vae.json
    python -m benchmarks.gpu_e2e coldstart --out DIR          # time to /readyz with a warm compile cache
    ... --smoke                                               # CPU, tiny layout: the plumbing in seconds

The server is `python -m serving serve` with the pod's rendered env and args (benchmarks.podenv), auth on (a key
file instead of Secrets Manager), plus `--warmup-sizes` for the benchmark's shape and `--compile-cache-dir` under
the work directory. Each case: the first request on its own (a compile or capture at request time shows there),
then untimed warm-up requests, then timed ones; p50 of send-to-last-byte and of the server's X-Inference-Ms.

Cold start: a pod that is new on a node where the compile cache is already there. The cache directory is filled
by an earlier start (the e2e phase, or a fill start here if it is empty); the measured start gets an empty
TMPDIR, HOME, inductor and Triton cache, so the compile cache directory is the only warm state besides the OS page
cache holding the weights.
"""
from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import gpu_common, podenv
from benchmarks.gpu import add_common_arguments, matrix
from benchmarks.gpu_common import Case, ResultFile
from benchmarks.serverproc import GenerateClient, ServerError, ServerProcess

STARTUP_EVENTS = ("loading model", "numerics", "pipeline loaded", "optimized pipeline", "model loaded",
                  "warm-up done", "ready")
# A cue that the server logged something about its compile cache; kept with the startup events.
CACHE_WORD = "cache"


def _server(args: argparse.Namespace, pod: dict[str, Any], models: gpu_common.ModelFiles, size: int,
            env_extra: dict[str, str] | None = None) -> tuple[ServerProcess, str]:
    device = "cpu" if args.smoke else "cuda"
    key = secrets.token_hex(16)
    key_file = args.work / "api-key"
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    flags = [*pod["args"], "--warmup-sizes", f"{size}x{size}", "--compile-cache-dir", str(args.work / "compile-cache")]
    if getattr(args, "tiny_vae", False):
        flags += ["--tiny-vae", str(models.tiny_vae)]
    env = podenv.server_env(pod, key_file, **(env_extra or {}))
    if args.smoke:
        env["OMP_NUM_THREADS"] = "1"  # as the CPU stream case: more threads only spin-wait on a small machine
    return ServerProcess(models.checkpoint, device, flags, env=env), key


def startup_events(server: ServerProcess) -> list[dict[str, Any]]:
    return [e for e in server.log_entries()
            if e.get("msg") in STARTUP_EVENTS or CACHE_WORD in str(e.get("msg", "")).lower()][:40]


def _request(client: GenerateClient, body: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        client.generate(body)
    except (ServerError, OSError) as exc:
        return {"ms": round((time.perf_counter() - t0) * 1000, 3), "error": str(exc)[:300]}
    return {"ms": round((time.perf_counter() - t0) * 1000, 3), "inference_ms": client.last_inference_ms}


def measure_case(client: GenerateClient, case: Case, warmup: int, requests: int) -> dict[str, Any]:
    first = _request(client, case.request_body(seed=0))
    for i in range(1, warmup):
        _request(client, case.request_body(seed=i))
    http, inference, errors = [], [], []
    for seed in range(warmup, warmup + requests):
        outcome = _request(client, case.request_body(seed=seed))
        if "error" in outcome:
            errors.append(outcome["error"])
            continue
        http.append(outcome["ms"])
        if outcome["inference_ms"] is not None:
            inference.append(outcome["inference_ms"])
    row: dict[str, Any] = {**case.key(), "first_request": first, "errors": errors[:3], "failed": len(errors)}
    if http:
        row.update({("http_" + k if k != "iters" else "requests"): v
                    for k, v in gpu_common.latency_stats(http).items()})
    if inference:
        row["inference_p50_ms"] = round(statistics.median(inference), 3)
    return row


def run_e2e(args: argparse.Namespace) -> Path:
    cases, models, pod, found = _prepare(args)
    name = "e2e-tiny-vae.json" if args.tiny_vae else "e2e.json"
    server, key = _server(args, pod, models, cases[0].size)
    requests = args.requests or (2 if args.smoke else 20)
    warmup = 1 if args.smoke else 3
    result = ResultFile(args.out / name, {
        "phase": "e2e-tiny-vae" if args.tiny_vae else "e2e", "smoke": args.smoke,
        "gpu": gpu_common.gpu_label(args.smoke, found), "versions": found,
        "server_command": server.command[1:], "pod_env": pod["env"], "pod_deviations": pod.get("deviations") or {},
        "requests": requests, "warmup": warmup,
        "rows": []})
    try:
        server.start()
        result.set(ready_s=round(server.wait_ready(timeout=args.ready_timeout), 3), startup=startup_events(server))
        print(f"server ready in {result.data['ready_s']:.1f} s", flush=True)
        client = GenerateClient(server.port, api_key=key)
        try:
            for case in cases:
                row = measure_case(client, case, warmup, requests)
                result.append("rows", row)
                print(f"http {case.label:<22} p50 {row.get('http_p50_ms', float('nan')):9.2f} ms  first "
                      f"{row['first_request']['ms']:9.1f} ms  failed {row['failed']}", flush=True)
        finally:
            client.close()
    except ServerError as exc:
        result.set(error=str(exc)[-2000:])
        raise SystemExit(f"benchmarks.gpu_e2e: {str(exc)[:2000]}") from None
    finally:
        server.stop(timeout=15)
    return result.path


def _cache_size(path: Path) -> dict[str, Any]:
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
    return {"files": len(files), "mib": round(sum(p.stat().st_size for p in files) / 2**20, 2)}


def run_coldstart(args: argparse.Namespace) -> Path:
    cases, models, pod, found = _prepare(args)
    cache = args.work / "compile-cache"
    result = ResultFile(args.out / "coldstart.json", {
        "phase": "coldstart", "smoke": args.smoke, "gpu": gpu_common.gpu_label(args.smoke, found),
        "versions": found, "pod_deviations": pod.get("deviations") or {}, "compile_cache_dir": str(cache),
        "weights_in_page_cache": True})
    if not _cache_size(cache)["files"]:
        fill, _ = _server(args, pod, models, cases[0].size)
        try:
            fill.start()
            result.set(fill_ready_s=round(fill.wait_ready(timeout=args.ready_timeout), 3))
        except ServerError as exc:
            result.set(error=f"fill start: {str(exc)[-2000:]}")
            raise SystemExit(f"benchmarks.gpu_e2e: {str(exc)[:2000]}") from None
        finally:
            fill.stop(timeout=15)
    result.set(compile_cache=_cache_size(cache))
    fresh = args.work / f"fresh-{time.time_ns()}"
    empty = {name: fresh / name for name in ("tmp", "home", "inductor", "triton")}
    for path in empty.values():
        path.mkdir(parents=True)
    server, key = _server(args, pod, models, cases[0].size, env_extra={
        "TMPDIR": str(empty["tmp"]), "HOME": str(empty["home"]),
        "TORCHINDUCTOR_CACHE_DIR": str(empty["inductor"]), "TRITON_CACHE_DIR": str(empty["triton"])})
    result.set(server_command=server.command[1:])
    try:
        server.start()
        ready = server.wait_ready(timeout=args.ready_timeout)
        result.set(ready_s=round(ready, 3), startup=startup_events(server))
        print(f"cold start with the compile cache: ready in {ready:.1f} s", flush=True)
        client = GenerateClient(server.port, api_key=key)
        try:
            result.set(first_request=_request(client, cases[0].request_body(seed=0)), first_request_case=cases[0].key())
        finally:
            client.close()
    except ServerError as exc:
        result.set(error=str(exc)[-2000:])
        raise SystemExit(f"benchmarks.gpu_e2e: {str(exc)[:2000]}") from None
    finally:
        server.stop(timeout=15)
    return result.path


def _prepare(args: argparse.Namespace) -> tuple[list[Case], gpu_common.ModelFiles, dict[str, Any], dict[str, Any]]:
    found = gpu_common.recorded_versions(args.work)
    if not args.smoke:
        gpu_common.require_cuda("benchmarks.gpu_e2e", found)
    try:
        pod = podenv.load(args.pod)
    except podenv.PodEnvError as exc:
        raise SystemExit(f"benchmarks.gpu_e2e: {exc}") from None
    return matrix(args), gpu_common.ensure_models(args.work, args.smoke), pod, found


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_e2e", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="phase", required=True)
    e2e = sub.add_parser("e2e", help="the matrix through HTTP")
    add_common_arguments(e2e)
    e2e.add_argument("--tiny-vae", action="store_true", help="serve with --tiny-vae (the approximate decode)")
    e2e.add_argument("--requests", type=int, default=None, help="timed requests per case (default 20; smoke 2)")
    cold = sub.add_parser("coldstart", help="time to /readyz with a warm compile cache")
    add_common_arguments(cold)
    for parser in (e2e, cold):
        parser.add_argument("--ready-timeout", type=float, default=600.0, help="seconds to wait for /readyz")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = run_e2e(args) if args.phase == "e2e" else run_coldstart(args)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
