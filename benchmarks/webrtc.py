"""WebRTC vs WebSocket frame stream (`make bench`): the same model, frames and sizes over both transports.

Needs root: the server runs in one network namespace and the client in another, joined by a veth pair (private
10.201.0.0/24 addresses that exist only inside these namespaces), so every byte both transports put on the wire
is counted on the veth (IP headers and all) and a `tc ... tbf` qdisc on each end caps each direction. The
namespaces are removed at the end, also on failure.

Per size (256x256, 512x512; the tiny random-weight model with the tiny AutoencoderTiny, steps 2 x strength 0.5,
as benchmarks/stream.py): both transports send the same synthetic frames (a gradient with a moving square) open
loop at FPS for SECONDS; the WebSocket as JPEG quality 85 (loadtest.stream), WebRTC as aiortc's default VP8.
Reported: wire bytes per frame each way, delivered fps, and for WebRTC the server's per-frame overhead: its
`overhead_ms` (RGB conversions and engine hops, from the data channel's stats) plus the VP8 decode and encode
times of the same frames measured here with aiortc's own codec classes (the server runs them on aiortc's threads,
outside the session's view). Then 512x512 again with both directions capped at 5 Mbit/s.

    sudo .venv/bin/python -m benchmarks.webrtc [--seconds 15] [--fps 30]

Writes benchmarks/results/webrtc-cpu.json.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "benchmarks" / "results" / "webrtc-cpu.json"
CACHE_DIR = REPO_ROOT / ".cache"
NS_SERVER, NS_CLIENT = "edrtc-srv", "edrtc-cli"
SERVER_IP, CLIENT_IP = "10.201.0.1", "10.201.0.2"
PORT, METRICS_PORT = 8080, 9090
CAP = "5mbit"
PROMPT = "a watercolour painting of a city street"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True)


def netns_up() -> None:
    netns_down()
    sh("ip", "netns", "add", NS_SERVER)
    sh("ip", "netns", "add", NS_CLIENT)
    sh("ip", "link", "add", "v-srv", "netns", NS_SERVER, "type", "veth", "peer", "name", "v-cli", "netns", NS_CLIENT)
    for ns, dev, ip in ((NS_SERVER, "v-srv", SERVER_IP), (NS_CLIENT, "v-cli", CLIENT_IP)):
        sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
        sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")


def netns_down() -> None:
    for ns in (NS_SERVER, NS_CLIENT):
        sh("ip", "netns", "del", ns, check=False)


def cap(on: bool) -> None:
    for ns, dev in ((NS_SERVER, "v-srv"), (NS_CLIENT, "v-cli")):
        sh("ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root", check=False)
        if on:
            sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", CAP,
               "burst", "32kbit", "latency", "100ms")


def frames_rgb(size: int, count: int = 8):
    """loadtest.stream's synthetic frames, as the RGB arrays the WebRTC client encodes (same pixels)."""
    import numpy as np
    from PIL import Image

    from loadtest.stream import synthetic_frames

    return [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in synthetic_frames(size, size, "png", count)]


def codec_costs(size: int, count: int = 120) -> dict:
    """VP8 decode and encode per frame (ms) with aiortc's codec classes, at the server's default bitrate."""
    import fractions

    from aiortc.codecs import get_decoder, get_encoder
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters
    from av import VideoFrame

    codec = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
    encoder, decoder = get_encoder(codec), get_decoder(codec)
    frames = frames_rgb(size)
    enc_ms, dec_ms, sizes = [], [], []
    from aiortc.jitterbuffer import JitterFrame
    from aiortc.codecs.vpx import vp8_depayload

    for i in range(count):
        frame = VideoFrame.from_ndarray(frames[i % len(frames)], format="rgb24")
        frame.pts, frame.time_base = i * 3000, fractions.Fraction(1, 90000)
        t0 = time.perf_counter()
        payloads, timestamp = encoder.encode(frame, force_keyframe=i == 0)
        t1 = time.perf_counter()
        data = b"".join(vp8_depayload(p) for p in payloads)
        t2 = time.perf_counter()
        decoder.decode(JitterFrame(data=data, timestamp=timestamp))
        t3 = time.perf_counter()
        if i >= 10:  # after the keyframe and the rate control's start
            enc_ms.append((t1 - t0) * 1000)
            dec_ms.append((t3 - t2) * 1000)
            sizes.append(len(data))
    return {"vp8_encode_ms_p50": statistics.median(enc_ms), "vp8_decode_ms_p50": statistics.median(dec_ms),
            "vp8_encode_ms_p99": _p99(enc_ms), "vp8_decode_ms_p99": _p99(dec_ms),
            "vp8_bytes_per_frame": statistics.mean(sizes)}


def _p99(values: list[float]) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * 0.99))]


# ---------------------------------------------------------------- client side (runs inside NS_CLIENT)
def _wire() -> tuple[int, int]:
    base = Path("/sys/class/net/v-cli/statistics")
    return int((base / "tx_bytes").read_text()), int((base / "rx_bytes").read_text())


async def _websocket(url: str, size: int, fps: float, seconds: float) -> dict:
    from loadtest.stream import StreamBenchConfig, run_stream_bench

    tx0, rx0 = _wire()
    result = await run_stream_bench(StreamBenchConfig(url=url, fps=fps, frames=int(fps * seconds), width=size,
                                                      height=size, steps=2, strength=0.5, prompt=PROMPT))
    tx1, rx1 = _wire()
    sent, received = result["frames_sent"], result["frames_received"]
    return {"frames_sent": sent, "frames_received": received, "delivered_fps": result["delivered_fps_per_stream"],
            "uplink_bytes_per_frame": (tx1 - tx0) / max(sent, 1),
            "downlink_bytes_per_frame": (rx1 - rx0) / max(received, 1),
            "inference_ms_p50": result["inference_ms"]["p50"]}


async def _webrtc(url: str, size: int, fps: float, seconds: float) -> dict:
    from loadtest.webrtc import RtcClient

    client = RtcClient(url, frames_rgb(size), fps=fps, codec="VP8", bind_host=CLIENT_IP)
    tx0, rx0 = _wire()
    response = await client.open({"prompt": PROMPT, "num_inference_steps": 2, "strength": 0.5})
    if response.status_code != 201:
        raise RuntimeError(f"offer refused: {response.status_code} {response.text}")
    await asyncio.sleep(seconds)
    sent = client.source.sent
    tx1, rx1 = _wire()
    stats = client.stats()
    received = [t for t, _ in client.received]
    await client.delete()
    await client.close()
    span = (received[-1] - received[0]) if len(received) > 1 else 0
    overhead = [s["overhead_ms"] for s in stats[3:]] or [s["overhead_ms"] for s in stats] or [float("nan")]
    return {"frames_sent": sent, "frames_received": len(received), "processed": len(stats),
            "dropped": stats[-1]["dropped"] if stats else None,
            "delivered_fps": (len(received) - 1) / span if span else 0.0,
            "uplink_bytes_per_frame": (tx1 - tx0) / max(sent, 1),
            "downlink_bytes_per_frame": (rx1 - rx0) / max(len(received), 1),
            "session_overhead_ms_p50": statistics.median(overhead), "session_overhead_ms_p99": _p99(overhead),
            "inference_ms_p50": statistics.median([s["inference_ms"] for s in stats] or [float("nan")])}


def client_main(args) -> None:
    url = f"http://{SERVER_IP}:{PORT}"
    out = {}
    for transport in args.transports.split(","):
        run = _websocket if transport == "websocket" else _webrtc
        out[transport] = asyncio.run(run(url, args.size, args.fps, args.seconds))
    print(json.dumps(out))


# ---------------------------------------------------------------- orchestration (root namespace)
def _client(size: int, fps: float, seconds: float, transports: str = "websocket,webrtc") -> dict:
    cmd = ["ip", "netns", "exec", NS_CLIENT, sys.executable, "-m", "benchmarks.webrtc", "--client", "--size", str(size),
           "--fps", str(fps), "--seconds", str(seconds), "--transports", transports]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    if proc.returncode:
        raise RuntimeError(f"client failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _server(size: int) -> subprocess.Popen:
    from serving.model.tiny import write_tiny_model, write_tiny_taesd

    model, vae = CACHE_DIR / "tiny-model", CACHE_DIR / "tiny-taesd"
    if not (model / "model_index.json").is_file():
        write_tiny_model(model)
    if not (vae / "config.json").is_file():
        write_tiny_taesd(vae)
    cmd = ["ip", "netns", "exec", NS_SERVER, sys.executable, "-m", "serving", "serve", "--model", str(model),
           "--device", "cpu", "--host", SERVER_IP, "--port", str(PORT), "--metrics-port", str(METRICS_PORT),
           "--stream-vae", str(vae), "--stream-warmup-size", f"{size}x{size}", "--max-frame-bytes", str(4 << 20),
           "--max-image-size", "512", "--max-request-cost", str(10**12), "--webrtc-bind-host", SERVER_IP, "--webrtc-ports", "40000-40015",
           "--log-level", "error"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1",
                                                     "PYTHONPATH": str(REPO_ROOT)})
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        probe = sh("ip", "netns", "exec", NS_CLIENT, "curl", "-sf", "-o", "/dev/null",
                   f"http://{SERVER_IP}:{PORT}/readyz", check=False)
        if probe.returncode == 0:
            return proc
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        time.sleep(1)
    proc.terminate()
    raise RuntimeError("server not ready within 180 s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--transports", default="websocket,webrtc", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=512, help=argparse.SUPPRESS)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args(argv)
    if args.client:
        client_main(args)
        return 0
    if os.geteuid() != 0:
        print("benchmarks.webrtc needs root (network namespaces and tc); skipped", file=sys.stderr)
        return 0
    runs, costs = {}, {}
    netns_up()
    try:
        for size in (256, 512):
            costs[size] = codec_costs(size)
            server = _server(size)
            try:
                _client(size, args.fps, 8)  # untimed: config preparation, first keyframes
                runs[f"{size}"] = _client(size, args.fps, args.seconds)
                print(json.dumps({size: runs[f"{size}"]}), flush=True)
                if size == 512:
                    cap(True)
                    runs["512_capped_5mbit"] = _client(size, args.fps, args.seconds)
                    print(json.dumps({"capped": runs["512_capped_5mbit"]}), flush=True)
                    cap(False)
            finally:
                server.terminate()
                server.wait(timeout=60)
    finally:
        netns_down()
    document = _report(runs, costs, args)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document["summary"], indent=2))
    return 0


def _report(runs: dict, costs: dict, args) -> dict:
    r512, capped = runs["512"], runs["512_capped_5mbit"]
    c512 = costs[512]
    overhead_p50 = r512["webrtc"]["session_overhead_ms_p50"] + c512["vp8_decode_ms_p50"] + c512["vp8_encode_ms_p50"]
    overhead_p99 = r512["webrtc"]["session_overhead_ms_p99"] + c512["vp8_decode_ms_p99"] + c512["vp8_encode_ms_p99"]
    summary = {
        "uplink_bytes_per_frame_ratio": r512["webrtc"]["uplink_bytes_per_frame"] / r512["websocket"]["uplink_bytes_per_frame"],
        "uplink_bytes_per_frame_ratio_256": runs["256"]["webrtc"]["uplink_bytes_per_frame"]
        / runs["256"]["websocket"]["uplink_bytes_per_frame"],
        "server_overhead_ms_p50": overhead_p50,
        "server_overhead_ms_p99": overhead_p99,
        "capped_fps_ratio": capped["webrtc"]["delivered_fps"] / max(capped["websocket"]["delivered_fps"], 1e-9),
        "goals": {"uplink_bytes_per_frame_ratio": "<= 0.333", "server_overhead_ms_p50": "<= 5 (512x512)",
                  "capped_fps_ratio": ">= 2"},
    }
    load = os.getloadavg()[0]
    return {"generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "loadavg_1m": load},
            "settings": {"fps": args.fps, "seconds": args.seconds, "cap": CAP, "model": "tiny random-weight + tiny TAESD",
                         "steps": 2, "strength": 0.5, "websocket_frames": "JPEG q85", "webrtc_codec": "VP8 (aiortc)"},
            "summary": summary, "runs": runs,
            "codec_costs": {str(k): v for k, v in costs.items()}}


if __name__ == "__main__":
    sys.exit(main())
