"""Device client benchmark: the Python client (clients/python) against real servers on loopback standing in for
zones, listed by an --inventory-file.

1. Frame rate with one vs two frames in flight: a camera thread offers a new frame every 1/``camera_fps`` s
   (latest frame wins in the client), for ``seconds`` per case, directly on loopback and through a proxy that
   delays each direction by half of ``--rtt-ms`` (a metro/regional round trip; tc netem is not available here).
2. Failover: with the stream running, the active server gets SIGTERM; the gap is the time from the stream's close
   to the next frame out (the client's ``resumed`` event), and the stall the time between the last frame before
   and the first frame after. One sample per server killed (``servers - 1``).

    python -m benchmarks.device_client [--servers 3] [--seconds 8] [--size 64] [--rtt-ms 40]

Writes benchmarks/results/device-client-cpu.json and prints it.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import os
import platform
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

from benchmarks.serverproc import ServerProcess

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "benchmarks" / "results" / "device-client-cpu.json"
CACHE_DIR = REPO_ROOT / ".cache"
TARGET_GAP_S = 1.0

try:
    import edge_diffusion_client  # noqa: F401 - installed by make setup
except ImportError:  # run from a checkout without `make setup`: the checkout's client
    sys.path.insert(0, str(REPO_ROOT / "clients" / "python"))

from edge_diffusion_client import EdgeClient  # noqa: E402


def _frame(size: int, shade: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (shade % 256, 90, 160)).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


class DelayProxy:
    """TCP proxy on loopback that delays every chunk by ``one_way_s`` in each direction, order preserved."""

    def __init__(self, upstream_port: int, one_way_s: float) -> None:
        self.upstream_port, self.one_way_s = upstream_port, one_way_s
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    async def _pipe(self, reader, writer) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver():
            while (item := await queue.get()) is not None:
                due, data = item
                await asyncio.sleep(max(0.0, due - self.loop.time()))
                writer.write(data)
                await writer.drain()
            writer.close()

        sender = asyncio.create_task(deliver())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((self.loop.time() + self.one_way_s, data))
        except ConnectionError:
            pass
        queue.put_nowait(None)
        await sender

    async def _accept(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)


class Camera:
    """Offers a new frame every 1/fps s to a session (the client keeps only the newest unsent one)."""

    def __init__(self, session, size: int, fps: float) -> None:
        self.session, self.size, self.period = session, size, 1.0 / fps
        self.frames = [_frame(size, shade) for shade in range(0, 256, 16)]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        n = 0
        while not self.stop.wait(self.period):
            try:
                self.session.submit(self.frames[n % len(self.frames)])
            except Exception:  # noqa: BLE001 - the session failed; the reader reports it
                return
            n += 1


def _fps_case(url: str, key: str, size: int, in_flight: int, seconds: float, camera_fps: float) -> dict:
    with EdgeClient(url, key, discover=False, refresh_interval=0) as client, \
            client.stream({"prompt": "a watercolour city street", "num_inference_steps": 2},
                          max_in_flight=in_flight) as session:
        camera = Camera(session, size, camera_fps)
        for _ in range(5):  # untimed: the config's first frames
            session.get(timeout=60)
        started, frames = time.monotonic(), []
        while time.monotonic() - started < seconds:
            frames.append(session.get(timeout=60))
        camera.stop.set()
    span = frames[-1].received_at - frames[0].received_at
    return {"in_flight": in_flight, "frames": len(frames), "fps": round((len(frames) - 1) / span, 2),
            "inference_ms_p50": round(statistics.median(f.inference_ms for f in frames), 2)}


def _failover_case(servers: list[ServerProcess], key: str, size: int, camera_fps: float) -> list[dict]:
    samples = []
    url = f"http://127.0.0.1:{servers[0].port}"
    with EdgeClient(url, key, refresh_interval=0) as client, \
            client.stream({"prompt": "a watercolour city street", "num_inference_steps": 2}) as session:
        camera = Camera(session, size, camera_fps)
        by_port = {f"http://127.0.0.1:{s.port}": s for s in servers}
        for _ in range(len(servers) - 1):
            for _ in range(10):
                last = session.get(timeout=60)
            victim = by_port[session.endpoint.url]
            seen = len(session.events)
            victim.proc.send_signal(signal.SIGTERM)
            while True:
                frame = session.get(timeout=60)
                if frame.endpoint != victim_url(victim):
                    break
                last = frame
            resumed = next(e for e in session.events[seen:] if e.kind == "resumed")
            failover = next(e for e in session.events[seen:] if e.kind == "failover")
            samples.append({"from": failover.from_url, "to": failover.to_url, "reason": failover.reason,
                            "gap_s": round(resumed.gap_s, 3), "stall_s": round(frame.received_at - last.received_at, 3)})
            victim.proc.wait(timeout=30)
        camera.stop.set()
    return samples


def victim_url(server: ServerProcess) -> str:
    return f"http://127.0.0.1:{server.port}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=3, help="servers on loopback (failover samples: servers - 1)")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per frame-rate case")
    parser.add_argument("--size", type=int, default=64, help="square frame side in pixels (multiple of 8)")
    parser.add_argument("--rtt-ms", type=float, default=40.0, help="round trip the delay proxy adds (0: skip)")
    parser.add_argument("--camera-fps", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from serving.model.tiny import write_tiny_model, write_tiny_taesd

    model, vae = CACHE_DIR / "tiny-model", CACHE_DIR / "tiny-taesd"
    if not (model / "model_index.json").is_file():
        write_tiny_model(model)
    if not (vae / "config.json").is_file():
        write_tiny_taesd(vae)
    key = "device-client-bench"
    CACHE_DIR.mkdir(exist_ok=True)
    (CACHE_DIR / "bench-key").write_text(key)
    inventory = CACHE_DIR / "bench-endpoints.json"
    inventory.write_text("[]")
    common = ["--api-key-file", str(CACHE_DIR / "bench-key"), "--inventory-file", str(inventory),
              "--stream-vae", str(vae), "--stream-warmup-size", f"{args.size}x{args.size}", "--max-concurrency", "1",
              "--drain-timeout", "5", "--log-level", "warning"]
    servers = [ServerProcess(model, "cpu", common, env={"OMP_NUM_THREADS": "1"}) for _ in range(args.servers)]
    inventory.write_text(json.dumps([{"url": victim_url(s), "zone": f"loopback-{i}"} for i, s in enumerate(servers)]))
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready(timeout=300)
        direct = victim_url(servers[0])
        rate = {"loopback": [_fps_case(direct, key, args.size, n, args.seconds, args.camera_fps) for n in (1, 2)]}
        if args.rtt_ms > 0:
            proxy = DelayProxy(servers[0].port, args.rtt_ms / 2000)
            rate[f"rtt_{args.rtt_ms:g}ms"] = [
                _fps_case(f"http://127.0.0.1:{proxy.port}", key, args.size, n, args.seconds, args.camera_fps)
                for n in (1, 2)]
        failovers = _failover_case(servers, key, args.size, args.camera_fps)
    finally:
        for server in servers:
            server.stop()
    import torch
    import websockets

    report = {
        "benchmark": "device client (clients/python)", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} vCPU, CPU only, {platform.machine()}; tiny random-weight model + tiny VAE; "
                   f"{args.size}x{args.size} JPEG frames, 2 steps x strength 0.5; camera {args.camera_fps:g} fps",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "websockets": websockets.__version__},
        "command": "python -m benchmarks.device_client " + " ".join(argv if argv is not None else sys.argv[1:]),
        "frame_rate": rate, "failover": failovers,
        "failover_gap_s_max": max(s["gap_s"] for s in failovers), "target_gap_s": TARGET_GAP_S,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
