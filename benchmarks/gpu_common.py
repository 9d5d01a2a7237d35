"""Pieces every GPU benchmark phase shares (benchmarks/device_check.sh): the request, the model files, versions,
the GPU's peak, and result files that are rewritten after every case, so a phase killed by its timeout keeps
everything it measured."""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import sd21

PROMPT = "a photograph of an astronaut riding a horse on the moon, detailed, 8k"
CFG_SCALE = 7.5
GPU_SIZE = 512
SMOKE_SIZE = 64

# Dense (no 2:4 sparsity) BF16 tensor-core peaks from NVIDIA's datasheets; A10G (AWS-only part) from AWS/Baseten's
# A10 vs A10G comparison. First match wins, so the more specific names come first.
PEAK_BF16_DENSE_TFLOPS: list[tuple[str, str, float]] = [
    (r"H200 NVL", "H200 NVL", 835.5),
    (r"H200", "H200 SXM", 989.4),
    (r"H100 NVL", "H100 NVL", 835.5),
    (r"H100 PCIe", "H100 PCIe", 756.5),
    (r"H100", "H100 SXM", 989.4),
    (r"A100", "A100", 312.0),
    (r"A10G", "A10G", 70.0),
    (r"\bL4\b", "L4", 121.0),
]


def peak_bf16_tflops(gpu_name: str) -> tuple[str | None, float | None]:
    """(matched model, dense bf16 TFLOPS) for a torch.cuda.get_device_name() string; (None, None) if unknown."""
    for pattern, model, peak in PEAK_BF16_DENSE_TFLOPS:
        if re.search(pattern, gpu_name, flags=re.IGNORECASE):
            return model, peak
    return None, None


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


@dataclass(frozen=True)
class Case:
    """One request shape of the matrix."""

    size: int
    steps: int
    cfg: bool

    @property
    def label(self) -> str:
        return f"{self.size}px {self.steps} step{'s' if self.steps > 1 else ''} {'CFG' if self.cfg else 'no CFG'}"

    def key(self) -> dict[str, Any]:
        return {"size": self.size, "steps": self.steps, "cfg": self.cfg}

    def request_body(self, seed: int = 0) -> dict[str, Any]:
        """The POST /generate body of this case (the server's own request schema)."""
        body: dict[str, Any] = {"prompt": PROMPT, "width": self.size, "height": self.size,
                                "num_inference_steps": self.steps, "guidance_scale": CFG_SCALE if self.cfg else 0.0,
                                "seed": seed}
        if self.cfg:
            body["negative_prompt"] = ""
        return body


def cases(size: int, steps: list[int], cfgs: list[bool]) -> list[Case]:
    """The matrix in priority order: the target cases (most steps with guidance, then one step without) first, so
    a phase that runs out of time has measured what the targets need."""
    all_cases = [Case(size, s, c) for s in steps for c in cfgs]
    headline = [Case(size, max(steps), True), Case(size, min(steps), False)]
    first = [c for c in headline if c in all_cases]
    return list(dict.fromkeys(first + all_cases))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def latency_stats(times_ms: list[float]) -> dict[str, Any]:
    return {"p50_ms": round(statistics.median(times_ms), 3), "p90_ms": round(percentile(times_ms, 90), 3),
            "min_ms": round(min(times_ms), 3), "iters": len(times_ms)}


def versions() -> dict[str, Any]:
    """What actually ran: the imported modules' own versions (carried wheels shadow the machine's), the GPU."""
    import diffusers
    import torch
    import transformers

    found: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                             "cuda": torch.version.cuda, "diffusers": diffusers.__version__,
                             "transformers": transformers.__version__}
    for name in ("triton", "fastapi", "uvicorn", "pydantic", "numpy"):
        try:
            module = __import__(name)
        except ImportError:
            found[name] = None
        else:
            found[name] = getattr(module, "__version__", None)
    found["diffusers_path"] = str(Path(diffusers.__file__).parent)
    if torch.cuda.is_available():
        found["gpu"] = torch.cuda.get_device_name(0)
        found["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    else:
        found["gpu"] = None
    return found


def record_versions(work: Path) -> dict[str, Any]:
    """versions(), written to WORK/versions.json (device_check.sh does this first, in the phases' environment)."""
    found = versions()
    work.mkdir(parents=True, exist_ok=True)
    (work / "versions.json").write_text(json.dumps(found, indent=2) + "\n")
    return found


def recorded_versions(work: Path) -> dict[str, Any]:
    """The versions recorded for this work directory (measured now if none were): phases that only drive a
    server subprocess then start without importing torch or diffusers themselves."""
    path = work / "versions.json"
    return json.loads(path.read_text()) if path.is_file() else record_versions(work)


def gpu_label(smoke: bool, found: dict[str, Any]) -> str:
    """The GPU's name from recorded versions; the CPU for smoke runs."""
    if smoke:
        return f"cpu ({platform.processor() or platform.machine()})"
    return found.get("gpu") or "no-gpu"


def require_cuda(program: str, found: dict[str, Any]) -> None:
    if not found.get("gpu"):
        raise SystemExit(f"{program}: torch sees no CUDA device; run on an NVIDIA GPU, or pass --smoke for the CPU "
                         "code-path check")


class ResultFile:
    """One phase's JSON, rewritten whole (temporary file + rename) every time something is added."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                                     **header}
        path.parent.mkdir(parents=True, exist_ok=True)
        self.write()

    def write(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        os.replace(tmp, self.path)

    def set(self, **values: Any) -> None:
        self.data.update(values)
        self.write()

    def append(self, key: str, item: dict[str, Any]) -> None:
        self.data.setdefault(key, []).append(item)
        self.write()


@dataclass(frozen=True)
class ModelFiles:
    checkpoint: Path
    tiny_vae: Path
    arch: str


def ensure_models(work: Path, smoke: bool) -> ModelFiles:
    """The random-weight checkpoint (SD 2.1 shapes; the tiny layout when smoke) and a tiny VAE in its latent
    layout, written once per work directory and shared by every phase."""
    arch = sd21.TINY if smoke else sd21.SD21
    root = work / f"models-{arch.name}"
    files = ModelFiles(root / "checkpoint", root / "tiny-vae", arch.name)
    done = root / "complete"
    if not done.is_file():
        sd21.write_random_checkpoint(files.checkpoint, arch, device="cpu" if smoke else "cuda")
        sd21.write_tiny_vae(arch, files.tiny_vae)
        done.write_text("ok\n")
    return files


if __name__ == "__main__":
    import importlib
    import sys

    # Every module a phase runs, imported once before any phase starts: a missing carried wheel or a broken import
    # fails here, in seconds, instead of costing a phase its time.
    from benchmarks.wheels import PHASE_MODULES

    for module in PHASE_MODULES:
        importlib.import_module(module)
    print(json.dumps(record_versions(Path(sys.argv[1])) if len(sys.argv) > 1 else versions()))
