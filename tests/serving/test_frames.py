"""The stream's frame path on the real tiny CPU pipeline: config prepared once, frames deterministic, cancel."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from serving.core.errors import GenerationCancelled
from serving.stream.frames import FrameConfig, FrameRunner, load_stream_vae


@pytest.fixture(scope="module")
def pipe(cpu_backend):
    return cpu_backend.pipe


@pytest.fixture(scope="module")
def taesd_dir(tmp_path_factory):
    from serving.model.tiny import write_tiny_taesd

    return write_tiny_taesd(tmp_path_factory.mktemp("taesd") / "taesd")


def frame(color=(40, 160, 90), size=(64, 64)) -> Image.Image:
    pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    pixels[:] = color
    pixels[:, : size[0] // 2, 0] = 250  # not flat, so encode/decode has something to keep
    return Image.fromarray(pixels)


CONFIG = FrameConfig(prompt="a lighthouse", strength=0.5, steps=4, guidance_scale=0.0, seed=3)


def test_prepare_selects_the_img2img_slice_of_the_schedule(pipe):
    runner = FrameRunner(pipe)
    prepared = runner.prepare(CONFIG, 64, 64)
    # diffusers' img2img: int(steps x strength) steps from the end of the schedule.
    assert len(prepared.timesteps) == 2 and prepared.cfg is False
    a, b = prepared.noise_coeffs
    assert a > 0 and b > 0
    assert tuple(prepared.noise.shape) == (1, 4, 8, 8)
    with_cfg = runner.prepare(FrameConfig(prompt="x", strength=1.0, steps=2, guidance_scale=5.0, seed=3), 64, 64)
    assert with_cfg.cfg and with_cfg.embeds.shape[0] == 2 and len(with_cfg.timesteps) == 2


def test_frames_are_deterministic_and_keep_their_size(pipe):
    runner = FrameRunner(pipe)
    prepared = runner.prepare(CONFIG, 96, 64)
    first = runner.run(prepared, frame(size=(96, 64)), threading.Event())
    again = runner.run(prepared, frame(size=(96, 64)), threading.Event())
    assert first.size == (96, 64) and first.mode == "RGB"
    # The scheduler restarts at the same index every frame and the noise is fixed per seed.
    assert np.array_equal(np.asarray(first), np.asarray(again))
    other_seed = runner.run(runner.prepare(FrameConfig(**{**CONFIG.__dict__, "seed": 4}), 96, 64),
                            frame(size=(96, 64)), threading.Event())
    assert not np.array_equal(np.asarray(first), np.asarray(other_seed))


def test_cancel_stops_a_frame(pipe):
    runner = FrameRunner(pipe)
    prepared = runner.prepare(CONFIG, 64, 64)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(GenerationCancelled):
        runner.run(prepared, frame(), cancel)


def test_cuda_graphs_are_off_on_cpu(pipe):
    assert FrameRunner(pipe, cuda_graphs=True).cuda_graphs is False


def test_tiny_autoencoder(pipe, taesd_dir):
    vae = load_stream_vae(str(taesd_dir), pipe)
    runner = FrameRunner(pipe, vae)
    assert type(runner.vae).__name__ == "AutoencoderTiny" and runner.scaling == 1.0
    out = runner.run(runner.prepare(CONFIG, 64, 64), frame(), threading.Event())
    assert out.size == (64, 64)
    with pytest.raises(ValueError, match="no config.json"):
        load_stream_vae(str(taesd_dir / "missing"), pipe)


def test_frames_bypass_instance_level_wrappers(pipe, monkeypatch):
    """The GPU path may wrap unet.forward / vae.decode per instance (torch.compile, graph runners) for the REST
    shapes; frames use the classes' own methods, so an unwarmed frame shape can never compile mid-request."""

    def wrapped(*args, **kwargs):
        raise AssertionError("a frame went through an instance-level wrapper")

    monkeypatch.setattr(pipe.unet, "forward", wrapped)
    monkeypatch.setattr(pipe.vae, "decode", wrapped)
    monkeypatch.setattr(pipe.vae, "encode", wrapped)
    runner = FrameRunner(pipe)
    assert runner.run(runner.prepare(CONFIG, 64, 64), frame(), threading.Event()).size == (64, 64)
