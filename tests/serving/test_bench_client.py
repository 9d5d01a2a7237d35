"""The load client: percentile math, option validation, error accounting, and a run against a real server."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import subprocess
import sys

import httpx
import numpy as np
import pytest

from loadtest import bench
from loadtest.bench import BenchConfig, percentile, run_bench, summarize
from tests.serving.conftest import REPO_ROOT, LiveServer

PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)

# --- percentile math -------------------------------------------------------------------------------


def test_percentile_known_values():
    values = [10.0, 20.0, 30.0, 40.0]
    assert percentile(values, 0) == 10.0
    assert percentile(values, 100) == 40.0
    assert percentile(values, 50) == 25.0  # halfway between the two middle values
    assert percentile(values, 90) == pytest.approx(37.0)  # rank 2.7 -> 30 + 0.7 * 10
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def test_percentile_matches_numpy_linear_and_ignores_input_order():
    rng = random.Random(1234)
    for size in (2, 3, 10, 101, 1000):
        values = [rng.lognormvariate(5, 0.6) for _ in range(size)]
        shuffled = values[:]
        rng.shuffle(shuffled)
        for q in (0, 1, 50, 90, 99, 99.9, 100):
            assert percentile(shuffled, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12)


@pytest.mark.parametrize("q", [-1, 100.5])
def test_percentile_rejects_out_of_range_q(q):
    with pytest.raises(ValueError, match="0..100"):
        percentile([1.0], q)


def test_summarize():
    stats = summarize([3.0, 1.0, 2.0])
    assert stats == {"p50": 2.0, "p90": pytest.approx(2.8), "p99": pytest.approx(2.98),
                     "mean": 2.0, "min": 1.0, "max": 3.0}
    assert set(summarize([]).values()) == {None}


# --- option validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--url", "ftp://host"], "--url must be the server's base URL"),
        (["--url", "http://h:8080/generate"], "--url is the base URL; drop '/generate'"),
        (["--url", "http://h", "--size", "512"], "--size must look like WIDTHxHEIGHT"),
        (["--url", "http://h", "--size", "500x512"], "--size needs positive multiples of 8"),
        (["--url", "http://h", "--concurrency", "0"], "--concurrency must be at least 1"),
        (["--url", "http://h", "--count", "-3"], "--count must be at least 1"),
        (["--url", "http://h", "--steps", "0"], "--steps must be at least 1"),
        (["--url", "http://h", "--guidance", "nan"], "--guidance must be a finite number"),
        (["--url", "http://h", "--seed", "4294967296"], "--seed must be within 0..4294967295"),
        (["--url", "http://h", "--timeout", "0"], "--timeout must be a positive number"),
        (["--url", "http://h", "--plot", "latency.svg"], "--plot writes a PNG"),
        (["--url", "http://h", "--prompt", "  "], "--prompt must not be empty"),
        (["--url", "http://h", "--api-key", "k", "--api-key-file", "f"], "mutually exclusive"),
        (["--url", "http://h", "--api-key-file", "/nonexistent/k"], "--api-key-file '/nonexistent/k' is unreadable"),
        (["--url", "http://h", "--endpoint", "grpc"], "--endpoint: invalid choice"),
    ],
)
def test_bad_options_exit_2_naming_the_option(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_payloads_per_endpoint():
    common = dict(url="http://h", concurrency=1, count=1, width=64, height=128, seed=4294967295,
                  prompt="p", timeout=5.0)
    generate = BenchConfig(endpoint="generate", steps=2, guidance=0.0, **common)
    assert generate.payload(0) == {"prompt": "p", "seed": 4294967295, "width": 64, "height": 128,
                                   "num_inference_steps": 2, "guidance_scale": 0.0}
    assert generate.payload(1)["seed"] == 0  # wraps within the server's seed range
    openai = BenchConfig(endpoint="openai", steps=None, guidance=None, **common)
    assert openai.payload(2) == {"prompt": "p", "seed": 1, "n": 1, "size": "64x128", "response_format": "b64_json"}


# --- error accounting against a scripted transport -----------------------------------------------


def _config(**overrides) -> BenchConfig:
    values = dict(url="http://bench.invalid", endpoint="generate", concurrency=3, count=12, width=64, height=64,
                  steps=2, guidance=0.0, seed=0, prompt="p", timeout=5.0)
    values.update(overrides)
    return BenchConfig(**values)


def test_errors_are_counted_by_status_and_kind():
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        assert request.headers["authorization"] == "Bearer sekret"
        index = body["seed"]
        if index % 4 == 1:
            return httpx.Response(429, headers={"Retry-After": "1"},
                                  json={"error": {"message": "queue full", "type": "overloaded"}})
        if index == 2:
            raise httpx.ConnectError("connection refused", request=request)
        if index == 6:
            return httpx.Response(200, headers={"content-type": "application/json"}, content=b"{}")
        return httpx.Response(200, headers={"content-type": "image/png", "x-inference-ms": str(100 + index)},
                              content=PNG_1PX)

    result = asyncio.run(run_bench(_config(), api_key="sekret", progress=False,
                                   transport=httpx.MockTransport(handler)))
    assert sorted(b["seed"] for b in seen) == list(range(12))  # every request sent exactly once
    assert result["requests"] == 12
    assert result["errors_by_status"] == {"429": 3, "ConnectError": 1, "invalid_response": 1}
    assert result["succeeded"] == 7 and result["failed"] == 5
    assert [s["index"] for s in result["samples"]] == list(range(12))
    failed = {s["index"]: s for s in result["samples"] if not s["ok"]}
    assert failed[1]["error"] == "queue full" and failed[1]["status"] == 429
    assert failed[2]["status"] is None
    assert "image" in failed[6]["error"]
    ok_inference = sorted(100.0 + i for i in (0, 3, 4, 7, 8, 10, 11))
    assert result["server_inference_ms"]["min"] == ok_inference[0]
    assert result["server_inference_ms"]["p50"] == percentile(ok_inference, 50)
    assert result["latency_ms"]["p50"] is not None
    assert "sekret" not in json.dumps(result)


def test_timeout_bounds_the_whole_request():
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, headers={"content-type": "image/png"}, content=PNG_1PX)

    result = asyncio.run(run_bench(_config(count=2, concurrency=2, timeout=0.2), progress=False,
                                   transport=httpx.MockTransport(slow)))
    assert result["errors_by_status"] == {"TimeoutError": 2}
    assert "--timeout 0.2 s" in result["samples"][0]["error"]
    assert result["duration_s"] < 2


def test_openai_endpoint_response_is_checked():
    good = {"created": 1, "data": [{"b64_json": base64.b64encode(PNG_1PX).decode()}]}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/images/generations"
        seed = json.loads(request.content)["seed"]
        return httpx.Response(200, json=good if seed else {"created": 1, "data": []})

    result = asyncio.run(run_bench(_config(endpoint="openai", count=4, concurrency=2), progress=False,
                                   transport=httpx.MockTransport(handler)))
    assert result["succeeded"] == 3
    assert result["errors_by_status"] == {"invalid_response": 1}
    assert result["server_inference_ms"] is None


def test_exit_status_is_1_when_requests_fail(monkeypatch, tmp_path, capsys):
    real_run = bench.run_bench

    def refused(config, api_key=None, progress=True):
        def handler(request):
            return httpx.Response(503, json={"error": {"message": "accelerator error", "type": "unavailable"}})
        return real_run(config, api_key, progress=False, transport=httpx.MockTransport(handler))

    monkeypatch.setattr(bench, "run_bench", refused)
    out = tmp_path / "r.json"
    plot = tmp_path / "p.png"
    code = bench.main(["--url", "http://bench.invalid", "--count", "3", "--out", str(out), "--plot", str(plot)])
    assert code == 1
    stdout = capsys.readouterr().out
    assert "errors: 503: 3" in stdout and "accelerator error" in stdout
    assert json.loads(out.read_text())["latency_ms"]["p50"] is None
    assert plot.read_bytes().startswith(b"\x89PNG")


# --- against a real server subprocess --------------------------------------------------------------

KEY = "bench-key-0123"


@pytest.fixture(scope="module")
def live_server(tiny_model, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("bench-server")
    key_file = workdir / "api-key"
    key_file.write_text(KEY + "\n")
    server = LiveServer(tiny_model, workdir / "server.log", "--api-key-file", str(key_file), "--max-concurrency", "1",
                        "--max-queue", "8")
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.mark.slow
def test_bench_cli_against_real_server(live_server, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    out, plot = tmp_path / "results" / "bench.json", tmp_path / "results" / "latency.png"
    count = 6
    proc = subprocess.run(
        [sys.executable, "-m", "serving", "bench", "--url", live_server.url, "--api-key-file", str(key_file),
         "--count", str(count), "--concurrency", "2", "--size", "64x64", "--steps", "2", "--guidance", "0",
         "--seed", "7", "--out", str(out), "--plot", str(plot)],
        cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "p50" in proc.stdout and "p99" in proc.stdout and "throughput" in proc.stdout
    assert "img" in proc.stderr  # the progress bar goes to stderr, keeping stdout for the summary

    result = json.loads(out.read_text())
    assert {"config", "started_at", "duration_s", "requests", "succeeded", "failed", "errors_by_status",
            "throughput_rps", "latency_ms", "server_inference_ms", "samples"} <= set(result)
    assert (result["requests"], result["succeeded"], result["failed"]) == (count, count, 0)
    assert result["errors_by_status"] == {}
    assert result["config"]["width"] == 64 and result["config"]["endpoint"] == "generate"
    latencies = [s["latency_ms"] for s in result["samples"]]
    assert result["latency_ms"]["p50"] == percentile(latencies, 50)
    assert result["latency_ms"]["min"] <= result["latency_ms"]["p50"] <= result["latency_ms"]["p99"]
    assert result["latency_ms"]["max"] <= result["duration_s"] * 1000
    assert result["throughput_rps"] == pytest.approx(count / result["duration_s"])
    # The server's own inference time is part of, so never more than, the end-to-end latency.
    assert all(0 < s["inference_ms"] <= s["latency_ms"] for s in result["samples"])
    assert sorted(s["index"] for s in result["samples"]) == list(range(count))
    assert KEY not in out.read_text()
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


@pytest.mark.slow
def test_bench_openai_endpoint_and_auth_errors_against_real_server(live_server):
    config = _config(url=live_server.url, endpoint="openai", count=3, concurrency=1)
    result = asyncio.run(run_bench(config, api_key=KEY, progress=False))
    assert result["succeeded"] == 3, result["samples"]

    rejected = asyncio.run(run_bench(_config(url=live_server.url, count=2, concurrency=2), api_key="wrong",
                                     progress=False))
    assert rejected["errors_by_status"] == {"401": 2}
    assert rejected["latency_ms"]["p50"] is None and rejected["throughput_rps"] == 0.0

    invalid = asyncio.run(run_bench(_config(url=live_server.url, count=1, steps=51), api_key=KEY, progress=False))
    assert invalid["errors_by_status"] == {"422": 1}
    assert "num_inference_steps" in invalid["samples"][0]["error"]
