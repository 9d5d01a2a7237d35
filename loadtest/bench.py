"""Load client: ``python -m loadtest --url URL`` (or ``python -m serving bench`` in a checkout) fires generations at a server and reports latency.

Each request is timed end to end (connect, queue, inference, transfer). The summary prints p50/p90/p99
latency, throughput and errors by status; ``--out`` keeps every sample as JSON and ``--plot`` draws them.
``--stream`` switches to the WebSocket frame-stream client (loadtest.stream).
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import datetime as dt
import json
import math
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence
from urllib.parse import urlsplit

import httpx

from loadtest.common import (  # noqa: F401 - percentile and summarize are part of this module's API
    DEFAULT_PROMPT,
    MAX_SEED as _MAX_SEED,
    PERCENTILES,
    UsageError,
    parse_size as _parse_size,
    percentile,
    read_api_key,
    summarize,
)

ENDPOINT_PATHS = {"generate": "/generate", "openai": "/v1/images/generations"}


@dataclass(frozen=True)
class BenchConfig:
    url: str
    endpoint: str
    concurrency: int
    count: int
    width: int
    height: int
    steps: int | None
    guidance: float | None
    seed: int
    prompt: str
    timeout: float

    def payload(self, index: int) -> dict:
        # Distinct, reproducible seeds: every image is real work, and reruns generate the same images.
        seed = (self.seed + index) % (_MAX_SEED + 1)
        body: dict = {"prompt": self.prompt, "seed": seed}
        if self.endpoint == "openai":
            body.update(n=1, size=f"{self.width}x{self.height}", response_format="b64_json")
        else:
            body.update(width=self.width, height=self.height)
        if self.steps is not None:
            body["num_inference_steps"] = self.steps
        if self.guidance is not None:
            body["guidance_scale"] = self.guidance
        return body


@dataclass
class Sample:
    index: int
    started_s: float  # since the run began
    latency_ms: float
    status: int | None  # None: no HTTP response at all
    ok: bool
    inference_ms: float | None = None
    error: str | None = None

    @property
    def error_key(self) -> str:
        if self.status is None:
            return self.error.split(":", 1)[0] if self.error else "error"
        return "invalid_response" if self.status == 200 else str(self.status)


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    except (ValueError, AttributeError):
        pass
    return response.text[:200]


def _check_body(endpoint: str, response: httpx.Response) -> str | None:
    """Why a 200 response is not a usable image, or None when it is one."""
    if endpoint == "generate":
        if not response.headers.get("content-type", "").startswith("image/"):
            return f"expected an image, got content-type {response.headers.get('content-type')!r}"
        return None if response.content else "empty image body"
    try:
        data = response.json()["data"]
        if len(data) != 1 or not base64.b64decode(data[0]["b64_json"], validate=True):
            return "expected one non-empty b64_json image"
    except (ValueError, KeyError, TypeError, IndexError, binascii.Error) as exc:
        return f"malformed images response: {exc!r}"
    return None


async def _one_request(client: httpx.AsyncClient, config: BenchConfig, index: int, t0: float) -> Sample:
    path = ENDPOINT_PATHS[config.endpoint]
    started = time.perf_counter()
    try:
        # httpx timeouts apply per network operation; this bounds the whole request, body included.
        async with asyncio.timeout(config.timeout):
            response = await client.post(path, json=config.payload(index))
    except (httpx.HTTPError, TimeoutError) as exc:
        elapsed = (time.perf_counter() - started) * 1000
        detail = str(exc) or f"no complete response within --timeout {config.timeout:g} s"
        return Sample(index, started - t0, elapsed, None, False, error=f"{type(exc).__name__}: {detail}")
    elapsed = (time.perf_counter() - started) * 1000
    try:
        inference_ms = float(response.headers["x-inference-ms"])
    except (KeyError, ValueError):
        inference_ms = None
    if response.status_code != 200:
        return Sample(index, started - t0, elapsed, response.status_code, False, inference_ms,
                      _error_message(response))
    problem = _check_body(config.endpoint, response)
    return Sample(index, started - t0, elapsed, 200, problem is None, inference_ms, problem)


async def run_bench(config: BenchConfig, api_key: str | None = None, progress: bool = True,
                    transport: httpx.AsyncBaseTransport | None = None) -> dict:
    """Send ``config.count`` requests with ``config.concurrency`` in flight; returns the result document."""
    from tqdm import tqdm

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=config.concurrency)
    samples: list[Sample] = []
    next_index = iter(range(config.count))
    bar = tqdm(total=config.count, unit="img", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    failures = Counter()

    async def worker(client: httpx.AsyncClient) -> None:
        for index in next_index:  # a shared iterator: each index is taken by exactly one worker
            sample = await _one_request(client, config, index, t0)
            samples.append(sample)
            if not sample.ok:
                failures[sample.error_key] += 1
            bar.update(1)
            bar.set_postfix(ok=len(samples) - sum(failures.values()), failed=sum(failures.values()))

    started_at = dt.datetime.now(dt.timezone.utc)
    async with httpx.AsyncClient(base_url=config.url, headers=headers, timeout=config.timeout, limits=limits,
                                 transport=transport) as client:
        t0 = time.perf_counter()
        try:
            await asyncio.gather(*(worker(client) for _ in range(min(config.concurrency, config.count))))
        finally:
            bar.close()
        duration = time.perf_counter() - t0

    samples.sort(key=lambda s: s.index)
    ok = [s for s in samples if s.ok]
    inference = [s.inference_ms for s in ok if s.inference_ms is not None]
    return {
        "config": asdict(config),
        "started_at": started_at.isoformat(timespec="seconds"),
        "duration_s": duration,
        "requests": len(samples),
        "succeeded": len(ok),
        "failed": len(samples) - len(ok),
        "errors_by_status": dict(sorted(failures.items())),
        "throughput_rps": len(ok) / duration if duration > 0 else 0.0,
        "latency_ms": summarize([s.latency_ms for s in ok]),
        "server_inference_ms": summarize(inference) if inference else None,
        "samples": [asdict(s) for s in samples],
    }


def write_plot(result: dict, path: Path) -> None:
    """Latency over the run (left) and its distribution with the percentiles marked (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    ok = [s for s in samples if s["ok"]]
    failed = [s for s in samples if not s["ok"]]
    cfg = result["config"]
    fig, (timeline, histogram) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    fig.suptitle(f"{cfg['url']}{ENDPOINT_PATHS[cfg['endpoint']]}: {cfg['width']}x{cfg['height']}, "
                 f"steps={cfg['steps'] or 'default'}, concurrency={cfg['concurrency']}, {result['requests']} requests")
    timeline.scatter([s["started_s"] for s in ok], [s["latency_ms"] for s in ok], s=12, label="ok")
    if failed:
        timeline.scatter([s["started_s"] for s in failed], [s["latency_ms"] for s in failed], s=18, marker="x",
                         color="tab:red", label="failed")
    timeline.set(xlabel="request start (s)", ylabel="latency (ms)", title="latency over time")
    timeline.set_ylim(bottom=0)
    timeline.legend(loc="best")
    if ok:
        histogram.hist([s["latency_ms"] for s in ok], bins=min(30, max(5, len(ok) // 2)), color="tab:blue")
        for q, color in zip(PERCENTILES, ("tab:green", "tab:orange", "tab:red")):
            name, value = f"p{q}", result["latency_ms"][f"p{q}"]
            histogram.axvline(value, color=color, linestyle="--", label=f"{name} {value:.0f} ms")
        histogram.legend(loc="best")
    else:
        histogram.text(0.5, 0.5, "no successful requests", ha="center", va="center", transform=histogram.transAxes)
    histogram.set(xlabel="latency (ms)", ylabel="requests", title="latency distribution")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_summary(result: dict) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} ms"

    lat = result["latency_ms"]
    lines = [
        f"requests: {result['requests']}  succeeded: {result['succeeded']}  failed: {result['failed']}  "
        f"duration: {result['duration_s']:.2f} s",
        f"throughput: {result['throughput_rps']:.3f} images/s",
        f"latency: p50 {ms(lat['p50'])}  p90 {ms(lat['p90'])}  p99 {ms(lat['p99'])}  "
        f"mean {ms(lat['mean'])}  min {ms(lat['min'])}  max {ms(lat['max'])}",
    ]
    if result["server_inference_ms"]:
        inf = result["server_inference_ms"]
        lines.append(f"server inference (X-Inference-Ms): p50 {ms(inf['p50'])}  p90 {ms(inf['p90'])}  "
                     f"p99 {ms(inf['p99'])}")
    if result["errors_by_status"]:
        lines.append("errors: " + ", ".join(f"{k}: {v}" for k, v in result["errors_by_status"].items()))
        first = next(s for s in result["samples"] if not s["ok"])
        lines.append(f"first error (request {first['index']}): {first['error']}")
    return "\n".join(lines)


def _validate_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--url must be the server's base URL like http://HOST:8080, got {value!r}")
    if parts.query or parts.fragment:
        raise UsageError(f"--url must not have a query or fragment, got {value!r}")
    for path in ENDPOINT_PATHS.values():
        if parts.path.rstrip("/").endswith(path):
            raise UsageError(f"--url is the base URL; drop {path!r} and choose the route with --endpoint")
    return value.rstrip("/")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving bench",
        description="Load-test a serving endpoint and report latency percentiles and throughput.",
    )
    parser.add_argument("--url", required=True, help="server base URL, e.g. http://203.0.113.7:30080")
    parser.add_argument("--api-key", default=None,
                        help="API key sent as 'Authorization: Bearer KEY' (default: $SERVING_BENCH_API_KEY)")
    parser.add_argument("--api-key-file", type=Path, default=None, help="read the API key from this file")
    parser.add_argument("--endpoint", choices=sorted(ENDPOINT_PATHS), default="generate",
                        help="generate: POST /generate (image bytes); openai: POST /v1/images/generations")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight at once (default 1)")
    parser.add_argument("--count", type=int, default=20, help="total requests (default 20)")
    parser.add_argument("--size", default="512x512", help="image size WIDTHxHEIGHT (default 512x512)")
    parser.add_argument("--steps", type=int, default=None, help="inference steps (default: the model's)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the model's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of request 0; request i uses seed+i")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="prompt for every request")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds one request may take in total (default 120)")
    parser.add_argument("--out", type=Path, default=None, help="write the full results as JSON here")
    parser.add_argument("--plot", type=Path, default=None, help="write a latency plot (PNG) here")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _config_from_args(args: argparse.Namespace) -> tuple[BenchConfig, str | None]:
    url = _validate_url(args.url)
    width, height = _parse_size(args.size)
    if args.concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, got {args.concurrency}")
    if args.count < 1:
        raise UsageError(f"--count must be at least 1, got {args.count}")
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {args.steps}")
    if args.guidance is not None and (not math.isfinite(args.guidance) or args.guidance < 0):
        raise UsageError(f"--guidance must be a finite number >= 0, got {args.guidance}")
    if not 0 <= args.seed <= _MAX_SEED:
        raise UsageError(f"--seed must be within 0..{_MAX_SEED}, got {args.seed}")
    if not args.prompt.strip():
        raise UsageError("--prompt must not be empty")
    if not math.isfinite(args.timeout) or args.timeout <= 0:
        raise UsageError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        raise UsageError(f"--plot writes a PNG; give a path ending in .png, got {str(args.plot)!r}")
    api_key = read_api_key(args.api_key, args.api_key_file)
    config = BenchConfig(url=url, endpoint=args.endpoint, concurrency=args.concurrency, count=args.count,
                         width=width, height=height, steps=args.steps, guidance=args.guidance, seed=args.seed,
                         prompt=args.prompt, timeout=args.timeout)
    return config, api_key


def main(argv: list[str] | None = None) -> int:
    """CLI entry point. Exit status: 0 all requests succeeded, 1 some failed, 2 bad options."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--stream" in argv:
        from loadtest.stream import main as stream_main

        return stream_main([a for a in argv if a != "--stream"])
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        config, api_key = _config_from_args(args)
    except UsageError as exc:
        parser.error(str(exc))  # exits with status 2 and the usage line

    result = asyncio.run(run_bench(config, api_key, progress=not args.no_progress))
    print(format_summary(result))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"results: {args.out}")
    if args.plot is not None:
        write_plot(result, args.plot)
        print(f"plot: {args.plot}")
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
