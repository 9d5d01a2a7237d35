"""Benchmark fixtures: one tiny random-weight pipeline directory per session."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from serving.model.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("bench-models") / "tiny")


@pytest.fixture()
def tiny_pipe():
    """A fresh fp32 tiny SD 2.x pipeline with the SD 2.1 block layout (optimize_pipeline mutates it)."""
    from benchmarks import sd21

    return sd21.build_pipeline("tiny", device="cpu", seed=0)


@pytest.fixture(scope="session")
def nvidia_pod(tmp_path_factory) -> Path:
    """The nvidia pod's server settings rendered from the chart (benchmarks.podenv), as `make gpu-wheels` writes."""
    from benchmarks import podenv

    path = tmp_path_factory.mktemp("pod") / "nvidia-pod.json"
    assert podenv.main(["--out", str(path)]) == 0
    return path
