"""Stream load client: ``python -m serving bench --stream --url URL`` opens N frame streams (GET /v1/stream).

Each stream sends frames at ``--fps`` (latest frame wins on the server, so the excess is dropped there), or with
``--fps 0`` closed loop: the next frame leaves when the previous answer arrived (the per-frame overhead case).
Reports delivered fps, the dropped fraction, per-frame latency p50/p99 (send to the last byte of the answer)
and the overhead (latency minus the server's inference_ms), as JSON (``--out``) and a PNG plot (``--plot``).
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from loadtest.common import DEFAULT_PROMPT, PERCENTILES, UsageError, parse_size, read_api_key, summarize

FORMATS = ("jpeg", "png", "webp")


@dataclass(frozen=True)
class StreamBenchConfig:
    url: str
    streams: int = 1
    fps: float = 0.0
    frames: int = 100
    width: int = 256
    height: int = 256
    frame_format: str = "jpeg"
    output_format: str = "jpeg"
    steps: int | None = None
    strength: float | None = None
    prompt: str = DEFAULT_PROMPT
    seed: int = 0
    timeout: float = 60.0

    @property
    def stream_url(self) -> str:
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/v1/stream"

    def message(self) -> dict:
        body: dict = {"prompt": self.prompt, "seed": self.seed, "output_format": self.output_format}
        if self.steps is not None:
            body["num_inference_steps"] = self.steps
        if self.strength is not None:
            body["strength"] = self.strength
        return body


@dataclass
class StreamResult:
    index: int
    sent: int = 0
    received: int = 0
    dropped: int = 0
    duration_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)  # {seq, sent_s, latency_ms, inference_ms}


def synthetic_frames(width: int, height: int, fmt: str, count: int = 8) -> list[bytes]:
    """A few distinct encoded frames (a gradient with a moving square), so no two consecutive frames are equal."""
    from PIL import Image, ImageDraw

    frames = []
    for i in range(count):
        image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
        draw = ImageDraw.Draw(image)
        x = (i * width // count) % max(1, width - width // 4)
        draw.rectangle([x, height // 3, x + width // 4, height // 3 + height // 4], fill=(200, 40, 40))
        buf = io.BytesIO()
        image.save(buf, format=fmt.upper(), **({"quality": 85} if fmt != "png" else {}))
        frames.append(buf.getvalue())
    return frames


async def _receive(ws, result: StreamResult, sent_at: dict[int, float], t0: float, timeout: float):
    """One answer: (header, image bytes), or None after an error message (recorded)."""
    message = await asyncio.wait_for(ws.recv(), timeout)
    header = json.loads(message)
    if header.get("type") == "error":
        result.errors.append(header["error"]["message"])
        return None
    data = await asyncio.wait_for(ws.recv(), timeout)
    now = time.perf_counter()
    sent = sent_at.pop(header["seq"], None)
    result.received += 1
    result.dropped = header["dropped"]
    if sent is not None and data:
        result.samples.append({"seq": header["seq"], "sent_s": sent - t0, "latency_ms": (now - sent) * 1000,
                               "inference_ms": header["inference_ms"]})
    return header


async def _one_stream(config: StreamBenchConfig, index: int, headers: dict, frames: list[bytes]) -> StreamResult:
    import websockets

    result = StreamResult(index)
    sent_at: dict[int, float] = {}
    async with websockets.connect(config.stream_url, additional_headers=headers, max_size=None,
                                  open_timeout=config.timeout, compression=None) as ws:
        await ws.send(json.dumps(config.message()))
        t0 = time.perf_counter()
        if config.fps <= 0:
            for i in range(config.frames):
                result.sent += 1
                sent_at[result.sent] = time.perf_counter()
                await ws.send(frames[i % len(frames)])
                await _receive(ws, result, sent_at, t0, config.timeout)
        else:
            async def reader():
                while result.sent < config.frames or sent_at:
                    header = await _receive(ws, result, sent_at, t0, config.timeout)
                    if header is not None:
                        for seq in [s for s in sent_at if s < header["seq"]]:
                            sent_at.pop(seq)  # dropped by the server: it answers newer frames only

            reading = asyncio.create_task(reader())
            interval = 1.0 / config.fps
            for i in range(config.frames):
                await asyncio.sleep(max(0.0, t0 + i * interval - time.perf_counter()))
                result.sent += 1
                sent_at[result.sent] = time.perf_counter()
                await ws.send(frames[i % len(frames)])
            await reading
        result.duration_s = time.perf_counter() - t0
    return result


async def run_stream_bench(config: StreamBenchConfig, api_key: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    frames = synthetic_frames(config.width, config.height, config.frame_format)
    started_at = dt.datetime.now(dt.timezone.utc)
    results = await asyncio.gather(*(_one_stream(config, i, headers, frames) for i in range(config.streams)),
                                   return_exceptions=True)
    streams, failures = [], []
    for r in results:
        (failures if isinstance(r, BaseException) else streams).append(r)
    samples = [s for r in streams for s in r.samples]
    latency = [s["latency_ms"] for s in samples]
    overhead = [s["latency_ms"] - s["inference_ms"] for s in samples]
    sent = sum(r.sent for r in streams)
    dropped = sum(r.dropped for r in streams)
    fps = [r.received / r.duration_s for r in streams if r.duration_s > 0]
    return {
        "config": asdict(config),
        "started_at": started_at.isoformat(timespec="seconds"),
        "streams_ok": len(streams),
        "streams_failed": [f"{type(e).__name__}: {e}" for e in failures],
        "frames_sent": sent,
        "frames_received": sum(r.received for r in streams),
        "frames_dropped": dropped,
        "dropped_fraction": dropped / sent if sent else None,
        "delivered_fps_per_stream": sum(fps) / len(fps) if fps else 0.0,
        "delivered_fps_total": sum(fps),
        "latency_ms": summarize(latency),
        "inference_ms": summarize([s["inference_ms"] for s in samples]),
        "overhead_ms": summarize(overhead),
        "errors": [e for r in streams for e in r.errors][:20],
        "samples": [{"stream": r.index, **s} for r in streams for s in r.samples],
    }


def format_summary(result: dict) -> str:
    def ms(stats: dict, q: str) -> str:
        return "-" if stats[q] is None else f"{stats[q]:.2f} ms"

    lat, over = result["latency_ms"], result["overhead_ms"]
    dropped = result["dropped_fraction"]
    lines = [
        f"streams: {result['streams_ok']} ok, {len(result['streams_failed'])} failed  frames sent "
        f"{result['frames_sent']}, answered {result['frames_received']}, dropped {result['frames_dropped']} "
        f"({'-' if dropped is None else f'{dropped:.1%}'})",
        f"delivered: {result['delivered_fps_per_stream']:.1f} fps per stream, {result['delivered_fps_total']:.1f} total",
        f"latency: p50 {ms(lat, 'p50')}  p99 {ms(lat, 'p99')}   overhead (latency - inference_ms): "
        f"p50 {ms(over, 'p50')}  p99 {ms(over, 'p99')}",
    ]
    if result["streams_failed"] or result["errors"]:
        lines.append("first problem: " + (result["streams_failed"] + result["errors"])[0])
    return "\n".join(lines)


def write_plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result["config"]
    samples = result["samples"]
    fig, (timeline, histogram) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    fig.suptitle(f"{cfg['url']}/v1/stream: {cfg['streams']} stream(s), {cfg['width']}x{cfg['height']} "
                 f"{cfg['frame_format']}, fps={cfg['fps'] or 'closed loop'}: {result['delivered_fps_per_stream']:.1f} "
                 f"fps/stream delivered, {(result['dropped_fraction'] or 0):.0%} dropped")
    for stream in sorted({s["stream"] for s in samples}):
        mine = [s for s in samples if s["stream"] == stream]
        timeline.scatter([s["sent_s"] for s in mine], [s["latency_ms"] for s in mine], s=8, label=f"stream {stream}")
    timeline.set(xlabel="frame sent (s)", ylabel="latency (ms)", title="per-frame latency")
    timeline.set_ylim(bottom=0)
    if samples:
        timeline.legend(loc="best", fontsize="small")
        histogram.hist([s["latency_ms"] for s in samples], bins=30, color="tab:blue", alpha=0.7, label="latency")
        histogram.hist([s["latency_ms"] - s["inference_ms"] for s in samples], bins=30, color="tab:orange",
                       alpha=0.7, label="overhead")
        for q, color in zip((50, 99), ("tab:green", "tab:red")):
            value = result["latency_ms"][f"p{q}"]
            histogram.axvline(value, color=color, linestyle="--", label=f"latency p{q} {value:.1f} ms")
        histogram.legend(loc="best", fontsize="small")
    histogram.set(xlabel="ms", ylabel="frames", title="distribution")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serving bench --stream", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="server base URL, e.g. http://203.0.113.7:30080")
    p.add_argument("--api-key", default=None, help="bearer key (default: $SERVING_BENCH_API_KEY)")
    p.add_argument("--api-key-file", type=Path, default=None, help="read the bearer key from this file")
    p.add_argument("--streams", type=int, default=1, help="concurrent streams (default 1)")
    p.add_argument("--fps", type=float, default=0.0, help="frames per second per stream; 0: closed loop (default)")
    p.add_argument("--frames", type=int, default=100, help="frames per stream (default 100)")
    p.add_argument("--size", default="256x256", help="frame size WIDTHxHEIGHT (default 256x256)")
    p.add_argument("--frame-format", choices=FORMATS, default="jpeg", help="encoding of the sent frames")
    p.add_argument("--output-format", choices=FORMATS, default="jpeg", help="encoding the server answers with")
    p.add_argument("--steps", type=int, default=None, help="num_inference_steps (default: the server's)")
    p.add_argument("--strength", type=float, default=None, help="strength (default: the server's)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for any one answer")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--plot", type=Path, default=None, help="write a latency plot (PNG) here")
    return p


def config_from_args(args: argparse.Namespace) -> StreamBenchConfig:
    parts = urlsplit(args.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--url must be the server's base URL like http://HOST:8080, got {args.url!r}")
    width, height = parse_size(args.size)
    if args.streams < 1 or args.frames < 1:
        raise UsageError("--streams and --frames must be at least 1")
    if not math.isfinite(args.fps) or args.fps < 0:
        raise UsageError(f"--fps must be >= 0 (0: closed loop), got {args.fps}")
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        raise UsageError(f"--plot writes a PNG; give a path ending in .png, got {str(args.plot)!r}")
    return StreamBenchConfig(url=args.url.rstrip("/"), streams=args.streams, fps=args.fps, frames=args.frames,
                             width=width, height=height, frame_format=args.frame_format,
                             output_format=args.output_format, steps=args.steps, strength=args.strength,
                             prompt=args.prompt, seed=args.seed, timeout=args.timeout)


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 every stream ran without errors, 1 otherwise, 2 bad options."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        api_key = read_api_key(args.api_key, args.api_key_file)
    except UsageError as exc:
        parser.error(str(exc))
    result = asyncio.run(run_stream_bench(config, api_key))
    print(format_summary(result))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"results: {args.out}")
    if args.plot is not None:
        write_plot(result, args.plot)
        print(f"plot: {args.plot}")
    return 0 if not result["streams_failed"] and not result["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
