"""Soak (`make bench`): 2,000 mixed requests against the real server process, hostile and mobile clients mixed in.

Classes, drawn at random (seeded): valid /generate and OpenAI requests, bad inputs (malformed JSON, invalid
fields, blank prompts, an oversized body, a wrong key), clients that disconnect before their answer, and slow
readers of a large OpenAI response; then the drain phase (benchmarks/drain.py: slow readers of answers larger
than the socket buffers, SIGTERM, every answer must arrive whole while the server still runs). Reports the 5xx count (must be 0), requests lost after admission (an
admitted request whose client stayed but got no complete answer; must be 0), the server's RSS growth, the 499s the
server logged, and p50/p99 latency per class. Writes benchmarks/results/soak-cpu.json.

    python -m benchmarks.soak [--requests 2000] [--concurrency 12] [--seed 7]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import random
import re
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

from benchmarks.serverproc import ServerProcess

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO_ROOT / ".cache"
RESULTS = REPO_ROOT / "benchmarks" / "results" / "soak-cpu.json"
KEY = "soak-key-0123456789abcdef"
CLASSES = {"generate": 0.35, "openai": 0.15, "bad": 0.25, "disconnect": 0.15, "slow_reader": 0.10}
BAD_BODIES = [
    (b"{nope", "application/json"),
    (json.dumps({"prompt": "x", "width": 65}).encode(), "application/json"),
    (json.dumps({"prompt": "\u200b\u200b"}).encode(), "application/json"),
    (json.dumps({"prompt": "x", "widht": 64}).encode(), "application/json"),
    (b'{"prompt": "' + b"x" * (1024 * 1024 + 10) + b'"}', "application/json"),
]


def _request(port: int, path: str, body: bytes, content_type: str = "application/json", key: str = KEY) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: soak\r\nContent-Type: {content_type}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def _exchange(port: int, payload: bytes, rcvbuf: int | None = None, read_delay_s: float = 0.0,
              close_after_s: float | None = None) -> tuple[int | None, bool]:
    """(status, complete): complete means the whole Content-Length arrived. A closed-early client returns (None, False)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(60)
    try:
        sock.connect(("127.0.0.1", port))
        sock.sendall(payload)
        if close_after_s is not None:
            time.sleep(close_after_s)
            return None, False
        data = bytearray()
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if read_delay_s:
                time.sleep(read_delay_s)
    except OSError:
        return None, False
    finally:
        sock.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    match = re.match(rb"HTTP/1\.1 (\d{3})", head)
    length = re.search(rb"(?i)\r\ncontent-length: (\d+)", head)
    if not match:
        return None, False
    return int(match.group(1)), length is not None and len(body) == int(length.group(1))


def one(port: int, kind: str, rng: random.Random) -> dict:
    started = time.perf_counter()
    seed = rng.randrange(2**32)
    if kind == "generate":
        body = json.dumps({"prompt": "a lighthouse", "num_inference_steps": 2, "seed": seed}).encode()
        status, complete = _exchange(port, _request(port, "/generate", body))
    elif kind == "openai":
        body = json.dumps({"prompt": "a kite", "n": 2, "size": "64x64", "num_inference_steps": 2, "seed": seed}).encode()
        status, complete = _exchange(port, _request(port, "/v1/images/generations", body))
    elif kind == "bad":
        if rng.random() < 0.2:
            payload = _request(port, "/generate", b'{"prompt": "x"}', key="wrong-key")
        else:
            body, content_type = rng.choice(BAD_BODIES)
            payload = _request(port, "/generate", body, content_type)
        status, complete = _exchange(port, payload)
    elif kind == "disconnect":
        body = json.dumps({"prompt": "gone", "num_inference_steps": 200, "seed": seed}).encode()
        status, complete = _exchange(port, _request(port, "/generate", body), close_after_s=rng.uniform(0.0, 0.3))
    else:  # slow reader of a ~1 MB OpenAI answer
        body = json.dumps({"prompt": "a map", "n": 2, "size": "256x256", "num_inference_steps": 1,
                           "guidance_scale": 0.0, "seed": seed}).encode()
        status, complete = _exchange(port, _request(port, "/v1/images/generations", body), rcvbuf=32768,
                                     read_delay_s=0.005)
    return {"kind": kind, "status": status, "complete": complete, "latency_s": time.perf_counter() - started}


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _rss_by_quarter(samples: list[tuple[float, int]], wall_s: float) -> list[int]:
    """Peak RSS in each quarter of the run: a leak climbs quarter after quarter, allocator warm-up levels off."""
    quarters = [[rss for t, rss in samples if q * wall_s / 4 <= t < (q + 1) * wall_s / 4] for q in range(4)]
    return [max(q) if q else 0 for q in quarters]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run(requests: int, concurrency: int, seed: int) -> dict:
    from serving.model.tiny import write_tiny_model

    model = CACHE_DIR / "tiny-model"
    if not (model / "model_index.json").is_file():
        write_tiny_model(model)
    key_file = CACHE_DIR / "soak.key"
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_text(KEY)
    args = ["--api-key-file", str(key_file), "--max-concurrency", "1", "--max-queue", "16", "--request-timeout", "60",
            "--max-image-size", "256", "--max-steps", "200", "--max-request-cost", str(10**12)]
    load_at_start = round(os.getloadavg()[0], 2)
    rng = random.Random(seed)
    kinds = rng.choices(list(CLASSES), weights=list(CLASSES.values()), k=requests)
    with ServerProcess(model, "cpu", args, env={"OMP_NUM_THREADS": "1"}) as server:
        server.wait_ready()
        warm = [one(server.port, "generate", rng) for _ in range(20)]
        rss_before = _rss_kib(server.proc.pid)
        started = time.perf_counter()
        seeds = [rng.randrange(2**32) for _ in kinds]
        samples: list[tuple[float, int]] = []
        done = threading.Event()

        def sample_rss() -> None:
            while not done.wait(1.0):
                samples.append((time.perf_counter() - started, _rss_kib(server.proc.pid)))

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(lambda pair: one(server.port, pair[0], random.Random(pair[1])), zip(kinds, seeds)))
        wall_s = time.perf_counter() - started
        done.set()
        sampler.join()
        time.sleep(1.0)  # aborted generations stop at their next step
        rss_after = _rss_kib(server.proc.pid)
        # Probe lines are left out: /readyz answers 503 until the model is loaded, by design.
        logged = [e for e in server.log_entries() if e.get("msg") == "request" and e.get("path") not in ("/readyz", "/healthz")]
    from benchmarks import drain

    drained = drain.run(model, key_file, KEY)
    server_5xx = sum(1 for e in logged if e.get("status", 0) >= 500)
    by_kind: dict[str, dict] = {}
    for kind in CLASSES:
        rows = [r for r in results if r["kind"] == kind]
        latencies = [r["latency_s"] * 1000 for r in rows if r["status"] is not None]
        statuses: dict[str, int] = {}
        for r in rows:
            statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
        by_kind[kind] = {"count": len(rows), "statuses": statuses,
                         "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
                         "p99_ms": round(_percentile(latencies, 0.99), 1) if latencies else None}
    # Lost after admission: the client stayed, the server did not refuse it (429) or reject it (4xx), yet no
    # complete answer arrived.
    lost = sum(1 for r in results if r["kind"] != "disconnect" and not (r["status"] is not None and r["complete"]))
    return {
        "requests": requests, "concurrency": concurrency, "seed": seed, "wall_s": round(wall_s, 1),
        "client_5xx": sum(1 for r in results if (r["status"] or 0) >= 500), "server_logged_5xx": server_5xx,
        "lost_after_admission": lost, "server_logged_499": sum(1 for e in logged if e.get("status") == 499),
        "rss_kib_before": rss_before, "rss_kib_after": rss_after, "rss_growth_kib": rss_after - rss_before,
        "rss_kib_peak_by_quarter": _rss_by_quarter(samples, wall_s),
        "warmup_ok": sum(1 for r in warm if r["status"] == 200), "classes": by_kind,
        "drain_slow_readers": drained,
        # Latencies move with the machine's other load; RSS and the counts do not.
        "host": {"python": platform.python_version(), "machine": platform.machine(),
                 "load_average_1m_at_start": load_at_start, "load_average_1m_at_end": round(os.getloadavg()[0], 2)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = run(args.requests, args.concurrency, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "classes"}))
    for kind, row in result["classes"].items():
        print(f"{kind:12s} n={row['count']:5d} p50={row['p50_ms']} ms p99={row['p99_ms']} ms statuses={row['statuses']}")
    from benchmarks.drain import passed

    ok = result["client_5xx"] == 0 and result["server_logged_5xx"] == 0 and result["lost_after_admission"] == 0
    ok = ok and passed(result["drain_slow_readers"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
