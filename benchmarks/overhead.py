"""HTTP overhead of the server: a tiny-model POST /generate through the real server minus the same call in-process.

Direct and HTTP requests alternate one by one, so load from anything else on the machine hits both sides alike.
Two steadier views come with it: the p50 of per-pair differences, and the p50 of round trip minus the server's
own X-Inference-Ms.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.serverproc import GenerateClient, ServerProcess

PROMPT = "a red cube on a wooden table, studio light"


def ensure_tiny_model(path: Path) -> Path:
    if not (path / "model_index.json").is_file():
        from serving.model.tiny import write_tiny_model

        write_tiny_model(path)
    return path


def measure_http_overhead(model: Path, size: int, steps: int, requests: int, warmup: int) -> dict[str, Any]:
    import torch

    from serving.model.loading import load_pipeline
    from serving.model.config import model_defaults
    from serving.core.settings import Settings

    defaults = model_defaults(model, Settings(model=str(model)))
    guidance = defaults.guidance_scale
    body = {"prompt": PROMPT, "width": size, "height": size, "num_inference_steps": steps,
            "guidance_scale": guidance, "seed": 1234}
    pipe = load_pipeline(str(model), "cpu")

    def direct() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            pipe(prompt=PROMPT, width=size, height=size, num_inference_steps=steps, guidance_scale=guidance,
                 num_images_per_prompt=1, generator=torch.Generator("cpu").manual_seed(1234), output_type="pil")
        return (time.perf_counter() - start) * 1000

    direct_ms: list[float] = []
    http_ms: list[float] = []
    server_ms: list[float] = []
    with ServerProcess(model, device="cpu", extra_args=["--max-queue", "1"]) as server:
        server.wait_ready(timeout=300)
        client = GenerateClient(server.port)
        try:
            for _ in range(warmup):
                direct()
                client.generate(body)
            for _ in range(requests):
                direct_ms.append(direct())
                http_ms.append(client.generate(body)[0] * 1000)
                if client.last_inference_ms is None:
                    raise SystemExit("benchmarks.cpu: the server sent no X-Inference-Ms header")
                server_ms.append(client.last_inference_ms)
        finally:
            client.close()
    direct_p50 = statistics.median(direct_ms)
    http_p50 = statistics.median(http_ms)
    return {
        "http_overhead_ms_p50": round(http_p50 - direct_p50, 3),
        "http_p50_ms": round(http_p50, 3),
        "direct_p50_ms": round(direct_p50, 3),
        "http_overhead_paired_ms_p50": round(statistics.median(h - d for h, d in zip(http_ms, direct_ms)), 3),
        # The same request's round trip minus the server's own X-Inference-Ms: what HTTP, validation, queueing,
        # encoding and the client add, free of the run-to-run spread of the generation itself.
        "http_overhead_outside_inference_ms_p50": round(
            statistics.median(h - i for h, i in zip(http_ms, server_ms)), 3),
        "server_inference_p50_ms": round(statistics.median(server_ms), 3),
        "overhead_requests": requests,
        "overhead_shape": {"width": size, "height": size, "steps": steps, "guidance_scale": guidance},
    }
