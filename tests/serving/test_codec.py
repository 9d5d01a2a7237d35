"""serving.stream.codec on CPU: the CPU codec, and the device-codec path driven by a PIL-backed stand-in for
torchvision.io (nvJPEG needs a GPU), including its fallback; frames through the runner with each."""
from __future__ import annotations

import io
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from serving.core.errors import InvalidRequest
from serving.stream.codec import FrameCodec, Staged, is_jpeg
from serving.stream.frames import FrameConfig, FrameRunner


def picture(size=(64, 64)) -> Image.Image:
    pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    pixels[:, : size[0] // 2] = (250, 30, 90)
    pixels[:, size[0] // 2:] = (20, 160, 240)
    return Image.fromarray(pixels)


def encoded(image: Image.Image, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, quality=90)
    return buf.getvalue()


class FakeJpeg:
    """torchvision.io's decode_jpeg/encode_jpeg contract, on PIL; counts calls and can refuse like nvJPEG."""

    ImageReadMode = SimpleNamespace(RGB="RGB")

    def __init__(self, refuse=False):
        self.decoded = self.encoded = 0
        self.refuse = refuse

    def decode_jpeg(self, data, mode, device):
        assert data.dtype == torch.uint8 and data.device.type == "cpu" and mode == "RGB"
        if self.refuse:
            raise RuntimeError("nvjpeg: unsupported")
        self.decoded += 1
        rgb = np.asarray(Image.open(io.BytesIO(data.numpy().tobytes())).convert("RGB"))
        return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous().to(device)

    def encode_jpeg(self, rgb, quality):
        assert rgb.dtype == torch.uint8 and rgb.shape[0] == 3
        self.encoded += 1
        return torch.frombuffer(bytearray(encoded(Image.fromarray(rgb.permute(1, 2, 0).numpy()))), dtype=torch.uint8)


@pytest.fixture(scope="module")
def pipe(cpu_backend):
    return cpu_backend.pipe


CONFIG = FrameConfig(prompt="a lighthouse", strength=0.5, steps=2, guidance_scale=0.0, seed=3)


def test_cpu_codec_stages_nchw_uint8_in_channels_last_layout():
    codec = FrameCodec("cpu")
    assert not codec.on_device and codec.copy_stream is None
    staged = codec.stage(picture())
    assert isinstance(staged, Staged) and staged.event is None and staged.size == (64, 64)
    pixels = staged.ready()
    assert pixels.shape == (1, 3, 64, 64) and pixels.dtype == torch.uint8
    assert pixels.is_contiguous(memory_format=torch.channels_last)
    assert np.array_equal(pixels[0].permute(1, 2, 0).numpy(), np.asarray(picture()))
    from_bytes = codec.stage(encoded(picture(), "PNG")).ready()  # bytes without a device codec: PIL
    assert torch.equal(from_bytes, pixels)


def test_device_codec_decodes_jpeg_and_encodes_jpeg_outputs_and_falls_back():
    jpeg = FakeJpeg()
    codec = FrameCodec("cpu", jpeg=jpeg)
    data = encoded(picture())
    assert codec.on_device and is_jpeg(data)
    staged = codec.stage(data)
    assert jpeg.decoded == 1 and staged.on_device_codec
    assert staged.ready().is_contiguous(memory_format=torch.channels_last)
    assert codec.stage(encoded(picture(), "PNG")).on_device_codec is False  # PNG: the CPU codec
    rgb = staged.ready()[0]
    out = codec.encode(rgb, "image/jpeg")
    assert is_jpeg(out) and jpeg.encoded == 1
    assert codec.encode(rgb, "image/png").startswith(b"\x89PNG") and jpeg.encoded == 1
    refusing, fell_back = FakeJpeg(refuse=True), []
    codec = FrameCodec("cpu", jpeg=refusing)
    codec.on_fallback = fell_back.append
    assert torch.equal(codec.stage(data).ready(), staged.ready()) and fell_back == ["decode"]
    with pytest.raises(InvalidRequest, match="frame: the image data is truncated or corrupt"):
        codec.stage(data[:20])


def test_runner_decode_keeps_jpeg_for_the_device_and_checks_the_header(pipe):
    runner = FrameRunner(pipe, codec=FrameCodec("cpu", jpeg=FakeJpeg()))
    data = encoded(picture())
    frame, size = runner.decode(data, 8, 1024)
    assert frame == data and size == (64, 64)
    with pytest.raises(InvalidRequest, match="outside this server's bounds") as info:
        runner.decode(data, 8, 32)
    assert info.value.param == "frame"
    png, size = runner.decode(encoded(picture(), "PNG"), 8, 1024)
    assert isinstance(png, Image.Image) and size == (64, 64)
    staged, _ = runner.decode(data, 8, 1024, stage=True)
    assert isinstance(staged, Staged)


def test_frames_are_the_same_through_either_codec_and_stage_on_another_thread(pipe):
    jpeg = FakeJpeg()
    device = FrameRunner(pipe, codec=FrameCodec("cpu", jpeg=jpeg))
    cpu = FrameRunner(pipe)
    data = encoded(picture())
    prepared = cpu.prepare(CONFIG, 64, 64)
    reference = cpu.run(prepared, Image.open(io.BytesIO(data)).convert("RGB"), threading.Event())
    assert np.array_equal(np.asarray(device.run(prepared, data, threading.Event())), np.asarray(reference))
    staged = []  # decoded and uploaded on another thread, as the websocket does while the previous frame runs
    worker = threading.Thread(target=lambda: staged.append(device.stage(data)))
    worker.start()
    worker.join()
    out = device.run(prepared, staged[0], threading.Event(), media="image/jpeg")
    assert is_jpeg(out) and jpeg.encoded == 1 and jpeg.decoded == 2
    assert Image.open(io.BytesIO(out)).size == (64, 64)
