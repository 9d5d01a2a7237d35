"""The soak's drain phase: slow readers of answers larger than the kernel's socket buffers, then SIGTERM.

Each reader starts a ~6.8 MB OpenAI answer (n=4, 704x704, b64_json) from a socket with a 64 KiB receive buffer,
reads the headers, and then reads at ~570 KB/s while the server drains. A reader is complete when the whole
Content-Length arrived; the server must still be running when each reader's last MiB is read (in a pod, the
network namespace goes with the process, so bytes the kernel would send after an exit never arrive), and it must
exit 0 within --drain-timeout + 1 s.

    python -m benchmarks.drain [--readers 3]   (also run by python -m benchmarks.soak)
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import re
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from benchmarks.serverproc import ServerProcess

REPO_ROOT = Path(__file__).resolve().parent.parent
DRAIN_TIMEOUT_S = 20
BODY = {"prompt": "a harbour map", "n": 4, "size": "704x704", "num_inference_steps": 1, "guidance_scale": 0.0,
        "response_format": "b64_json"}
READ_BYTES_PER_S = 570_000


def _read(port: int, key: str, headers_read: threading.Barrier, proc) -> dict:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.settimeout(60)
    try:
        sock.connect(("127.0.0.1", port))
        body = json.dumps(BODY).encode()
        sock.sendall((f"POST /v1/images/generations HTTP/1.1\r\nHost: drain\r\nContent-Type: application/json\r\n"
                      f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
        data = bytearray()
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return {"status": None, "complete": False, "alive_for_tail": None, "bytes": 0}
            data += chunk
        head, _, rest = bytes(data).partition(b"\r\n\r\n")
        status = int(re.match(rb"HTTP/1\.1 (\d{3})", head).group(1))
        length = int(re.search(rb"(?i)\r\ncontent-length: (\d+)", head).group(1))
        headers_read.wait()
        received, alive_for_tail = len(rest), None
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += len(chunk)
            if alive_for_tail is None and received >= length - (1 << 20):
                alive_for_tail = proc.poll() is None
            time.sleep(len(chunk) / READ_BYTES_PER_S)
        return {"status": status, "complete": received == length, "alive_for_tail": alive_for_tail, "bytes": length}
    except OSError as exc:
        return {"status": None, "complete": False, "alive_for_tail": None, "bytes": 0, "error": repr(exc)}
    finally:
        sock.close()


def run(model: Path, key_file: Path, key: str, readers: int = 3) -> dict:
    args = ["--api-key-file", str(key_file), "--max-concurrency", "1", "--max-queue", str(readers), "--request-timeout", "300",
            "--max-image-size", "1024", "--max-images", "4", "--drain-timeout", str(DRAIN_TIMEOUT_S),
            "--max-request-cost", str(10**12)]
    with ServerProcess(model, "cpu", args, env={"OMP_NUM_THREADS": "1"}) as server:
        server.wait_ready()
        # Every reader has its headers (so every response started before SIGTERM) before the signal.
        barrier = threading.Barrier(readers + 1)
        with concurrent.futures.ThreadPoolExecutor(readers) as pool:
            futures = [pool.submit(_read, server.port, key, barrier, server.proc) for _ in range(readers)]
            barrier.wait(timeout=300)
            signalled = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            exit_code = server.proc.wait(DRAIN_TIMEOUT_S + 30)
            exit_s = time.monotonic() - signalled
            results = [f.result() for f in futures]
    return {"readers": readers, "complete": sum(r["complete"] for r in results),
            "alive_for_every_tail": all(r["alive_for_tail"] for r in results), "bytes_each": [r["bytes"] for r in results],
            "statuses": [r["status"] for r in results], "exit_code": exit_code, "exit_s": round(exit_s, 2),
            "drain_timeout_s": DRAIN_TIMEOUT_S}


def passed(result: dict) -> bool:
    return (result["complete"] == result["readers"] and result["alive_for_every_tail"] and result["exit_code"] == 0
            and result["exit_s"] <= result["drain_timeout_s"] + 1)


def main(argv: list[str] | None = None) -> int:
    from serving.model.tiny import write_tiny_model

    parser = argparse.ArgumentParser(prog="python -m benchmarks.drain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--readers", type=int, default=3)
    args = parser.parse_args(argv)
    model = REPO_ROOT / ".cache" / "tiny-model"
    if not (model / "model_index.json").is_file():
        write_tiny_model(model)
    key_file = REPO_ROOT / ".cache" / "drain.key"
    key_file.write_text("drain-key-0123456789")
    result = run(model, key_file, "drain-key-0123456789", args.readers)
    print(json.dumps(result))
    return 0 if passed(result) else 1


if __name__ == "__main__":
    sys.exit(main())
