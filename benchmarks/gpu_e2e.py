"""GPU server phases: the real server, configured as the nvidia pod, measured through HTTP.

    python -m benchmarks.gpu_e2e e2e --out DIR          # the matrix through POST /generate -> DIR/e2e.json
    python -m benchmarks.gpu_e2e warmstart --out DIR    # time to /readyz with a warm compile cache -> warmstart.json
    ... --smoke                                         # CPU, tiny layout: the plumbing in seconds

The server is `python -m serving serve` with the pod's rendered env and args (benchmarks.podenv), auth on (a key
file instead of Secrets Manager), plus `--warmup-sizes` for the benchmark's shape. Each case: the first request on
its own (a compile or capture at request time shows there), then untimed warm-up requests, then timed ones; p50 of
send-to-last-byte and of the server's X-Inference-Ms.

e2e: the subject is the HTTP path, not compilation, so the server runs with compile off and streams off
(`E2E_ENV`): it starts in seconds, and its http p50 minus its X-Inference-Ms is the server's own overhead, the
part an in-process number (benchmarks.gpu) does not contain.

warmstart: a pod that is new on a node where the compile cache is already there, compile on as the pods run it,
streams off. The cache directory is filled by an earlier process with the same settings (the pipelines phase's
`fast` variant, or a fill start here if it is empty); the measured start gets an empty TMPDIR, HOME, inductor and
Triton cache, so the compile cache directory is the only warm state besides the OS page cache holding the weights.
Once ready, the headline cases go through HTTP to that compiled server.
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
                  "fast shapes warmed", "warm-up done", "ready")
# Servers whose subject is not compilation or the stream: neither is configured (nothing warms what no case uses).
E2E_ENV = {"SERVING_COMPILE": "false", "SERVING_COMPILE_MODE": None, "SERVING_CUDA_GRAPHS": "false",
           "SERVING_MAX_STREAMS": "0"}
# The warm start measures compilation as the pods run it; the stream is not its subject.
WARMSTART_ENV = {"SERVING_MAX_STREAMS": "0"}
# A cue that the server logged something about its compile cache; kept with the startup events.
CACHE_WORD = "cache"


def _server(args: argparse.Namespace, pod: dict[str, Any], models: gpu_common.ModelFiles, size: int,
            env_extra: dict[str, str | None] | None = None) -> tuple[ServerProcess, str]:
    """The server as the pod runs it; `env_extra` changes its env (None removes a variable)."""
    device = "cpu" if args.smoke else "cuda"
    key = secrets.token_hex(16)
    key_file = args.work / "api-key"
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    flags = [*pod["args"], "--warmup-sizes", f"{size}x{size}", "--compile-cache-dir", str(args.work / "compile-cache")]
    env = podenv.server_env(pod, key_file, **{k: v for k, v in (env_extra or {}).items() if v is not None})
    for name in [k for k, v in (env_extra or {}).items() if v is None]:
        env.pop(name, None)
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


def _measure(result: ResultFile, client: GenerateClient, cases: list[Case], warmup: int, requests: int) -> None:
    for case in cases:
        row = measure_case(client, case, warmup, requests)
        result.append("rows", row)
        print(f"http {case.label:<22} p50 {row.get('http_p50_ms', float('nan')):9.2f} ms  first "
              f"{row['first_request']['ms']:9.1f} ms  failed {row['failed']}", flush=True)


def run_e2e(args: argparse.Namespace) -> Path:
    cases, models, pod, found = _prepare(args)
    server, key = _server(args, pod, models, cases[0].size, env_extra=E2E_ENV)
    requests = args.requests or (2 if args.smoke else 10)
    warmup = 1 if args.smoke else 2
    result = ResultFile(args.out / "e2e.json", {
        "phase": "e2e", "smoke": args.smoke,
        "gpu": gpu_common.gpu_label(args.smoke, found), "versions": found,
        "server_command": server.command[1:], "pod_env": pod["env"], "pod_deviations": pod.get("deviations") or {},
        "phase_env": E2E_ENV, "requests": requests, "warmup": warmup, "rows": []})
    try:
        server.start()
        result.set(ready_s=round(server.wait_ready(timeout=args.ready_timeout), 3), startup=startup_events(server))
        print(f"server ready in {result.data['ready_s']:.1f} s", flush=True)
        client = GenerateClient(server.port, api_key=key)
        try:
            _measure(result, client, cases, warmup, requests)
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


def run_warmstart(args: argparse.Namespace) -> Path:
    cases, models, pod, found = _prepare(args)
    cache = args.work / "compile-cache"
    requests = args.requests or (2 if args.smoke else 5)
    result = ResultFile(args.out / "warmstart.json", {
        "phase": "warmstart", "smoke": args.smoke, "gpu": gpu_common.gpu_label(args.smoke, found),
        "versions": found, "pod_deviations": pod.get("deviations") or {}, "phase_env": WARMSTART_ENV,
        "compile_cache_dir": str(cache), "weights_in_page_cache": True, "requests": requests, "rows": []})
    if args.smoke:
        result.set(fill="skipped: the CPU backend compiles nothing, so there is no cache to fill")
    elif not _cache_size(cache)["files"]:
        fill, _ = _server(args, pod, models, cases[0].size, env_extra=WARMSTART_ENV)
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
        **WARMSTART_ENV, "TMPDIR": str(empty["tmp"]), "HOME": str(empty["home"]),
        "TORCHINDUCTOR_CACHE_DIR": str(empty["inductor"]), "TRITON_CACHE_DIR": str(empty["triton"])})
    result.set(server_command=server.command[1:])
    try:
        server.start()
        ready = server.wait_ready(timeout=args.ready_timeout)
        result.set(ready_s=round(ready, 3), startup=startup_events(server))
        print(f"start with the compile cache: ready in {ready:.1f} s", flush=True)
        client = GenerateClient(server.port, api_key=key)
        try:
            # The compiled server through HTTP: the two target cases (most steps with CFG, fewest without).
            _measure(result, client, cases[:2], 1, requests)
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
    e2e = sub.add_parser("e2e", help="the matrix through HTTP, compile and streams off")
    warm = sub.add_parser("warmstart", help="time to /readyz with a warm compile cache, then the target cases")
    for parser in (e2e, warm):
        add_common_arguments(parser)
        parser.add_argument("--requests", type=int, default=None,
                            help="timed requests per case (default e2e 10, warmstart 5; smoke 2)")
        parser.add_argument("--ready-timeout", type=float, default=600.0, help="seconds to wait for /readyz")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = run_e2e(args) if args.phase == "e2e" else run_warmstart(args)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
