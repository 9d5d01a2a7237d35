"""Stream frame codec: JPEG in and out on the GPU, the CPU codec as fallback, uploads that overlap GPU work.

On cuda with torchvision (pinned in the cuda image only), JPEG frames are decoded by nvJPEG
(``torchvision.io.decode_jpeg(..., device="cuda")``) and JPEG outputs encoded on the device
(``torchvision.io.encode_jpeg`` of a CUDA tensor); torchvision 0.28 torchvision/io/image.py. Everything else (PNG or
WebP frames and outputs, CPU devices, an image without torchvision, a frame nvJPEG refuses) goes through the CPU
codec: PIL decode, then an upload from pinned host memory with ``non_blocking=True`` on a separate copy stream,
so it never waits behind the frame being denoised. `stage` returns the pixels with a CUDA event; the frame that
uses them makes its stream wait on that event, so frame N+1's decode and upload can run (on a worker thread, see
serving.stream.websocket) while frame N's kernels run. On CPU the same code runs with ``device="cpu"``: no streams,
no events, no pinning.
"""
from __future__ import annotations

import contextlib
import io
import threading
from typing import Any, Callable

JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_QUALITY = 90  # as serving.core.imaging.encode_image
JPEG_MEDIA = "image/jpeg"
# Pinned staging buffers kept per frame shape: one being copied while the next is filled.
PINNED_PER_SHAPE = 2


def is_jpeg(data: bytes) -> bool:
    return bytes(data[:3]) == JPEG_MAGIC


def device_jpeg() -> Any | None:
    """torchvision.io when it is installed with its image extension (the cuda image), else None."""
    try:
        import torchvision.io as tvio
    except ImportError:  # the CPU image does not carry torchvision
        return None
    return tvio if hasattr(tvio, "decode_jpeg") and hasattr(tvio, "encode_jpeg") else None


class Staged:
    """A frame's pixels on the device (1x3xHxW uint8, channels_last strides), usable once ``event`` has passed."""

    def __init__(self, pixels: Any, event: Any = None, on_device_codec: bool = False) -> None:
        self.pixels = pixels
        self.event = event
        self.on_device_codec = on_device_codec

    @property
    def size(self) -> tuple[int, int]:
        return int(self.pixels.shape[-1]), int(self.pixels.shape[-2])

    def ready(self) -> Any:
        """The pixels, ordered after their upload on the current stream."""
        if self.event is not None:
            import torch

            stream = torch.cuda.current_stream(self.pixels.device)
            stream.wait_event(self.event)
            # Allocated on the copy stream, used on this one: the caching allocator must not reuse the block
            # before this stream's work on it is done.
            self.pixels.record_stream(stream)
        return self.pixels


class FrameCodec:
    """Decodes frames onto ``device`` and encodes results from it (see module doc).

    ``jpeg`` stands in for torchvision.io (tests run the device-codec path on CPU with a PIL-backed stand-in);
    None looks torchvision up on cuda and uses the CPU codec elsewhere.
    """

    def __init__(self, device: Any, jpeg: Any = None) -> None:
        import torch

        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        self.jpeg = jpeg if jpeg is not None else (device_jpeg() if cuda else None)
        self.copy_stream = torch.cuda.Stream(self.device) if cuda else None
        self.fallbacks = 0
        # Called with "decode" or "encode" when the device codec failed and the CPU codec took over.
        self.on_fallback: Callable[[str], None] | None = None
        self._pinned: dict[tuple, list] = {}
        self._lock = threading.Lock()

    @property
    def on_device(self) -> bool:
        return self.jpeg is not None

    # -- in ------------------------------------------------------------------------------------------------
    def stage(self, frame: Any) -> Staged:
        """JPEG bytes (decoded on the device when it can) or an RGB PIL image -> pixels on the device."""
        if isinstance(frame, (bytes, bytearray, memoryview)):
            if self.on_device and is_jpeg(frame):
                try:
                    return self._decode_on_device(bytes(frame))
                except RuntimeError:  # nvJPEG refused it (progressive, CMYK, corrupt...): PIL decides
                    self._fell_back("decode")
            from PIL import Image

            from serving.core.errors import InvalidRequest

            try:
                frame = Image.open(io.BytesIO(bytes(frame))).convert("RGB")
            except (OSError, ValueError, SyntaxError):
                raise InvalidRequest("frame: the image data is truncated or corrupt", param="frame") from None
        return self._upload(frame)

    def _decode_on_device(self, data: bytes) -> Staged:
        import torch

        encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        with self._on_copy_stream():
            chw = self.jpeg.decode_jpeg(encoded, mode=self.jpeg.ImageReadMode.RGB, device=self.device)
            # NHWC memory, NCHW shape (the CPU codec's layout, stride for stride): what the channels_last VAE reads
            # without a layout change.
            pixels = chw.permute(1, 2, 0).contiguous().permute(2, 0, 1).unsqueeze(0)
            event = self._record()
        return Staged(pixels, event, on_device_codec=True)

    def _upload(self, image: Any) -> Staged:
        import numpy as np
        import torch

        hwc = np.asarray(image, dtype=np.uint8)
        if self.copy_stream is None:
            pixels = torch.from_numpy(hwc.copy())
            return Staged(pixels.permute(2, 0, 1).unsqueeze(0))
        host, previous = self._pinned_buffer(hwc.shape)
        if previous is not None:
            previous.synchronize()  # that buffer's last upload must be done before it is overwritten
        host.numpy()[...] = hwc
        with self._on_copy_stream():
            pixels = host.to(self.device, non_blocking=True)
            event = self._record()
        self._remember(hwc.shape, host, event)
        return Staged(pixels.permute(2, 0, 1).unsqueeze(0), event)

    def _pinned_buffer(self, shape: tuple) -> tuple[Any, Any]:
        import torch

        with self._lock:
            ring = self._pinned.setdefault(tuple(shape), [])
            if len(ring) < PINNED_PER_SHAPE:
                return torch.empty(shape, dtype=torch.uint8, pin_memory=True), None
            host, event = ring.pop(0)
            return host, event

    def _remember(self, shape: tuple, host: Any, event: Any) -> None:
        with self._lock:
            self._pinned.setdefault(tuple(shape), []).append((host, event))

    # -- out -----------------------------------------------------------------------------------------------
    def encode(self, rgb: Any, media: str) -> bytes:
        """A 3xHxW uint8 image on the device -> ``media`` bytes; JPEG on the device when it can."""
        if media == JPEG_MEDIA and self.on_device:
            try:
                data = self.jpeg.encode_jpeg(rgb.contiguous(), quality=JPEG_QUALITY)
                return data.cpu().numpy().tobytes()
            except RuntimeError:
                self._fell_back("encode")
        from PIL import Image

        from serving.core.imaging import encode_image

        return encode_image(Image.fromarray(rgb.permute(1, 2, 0).cpu().numpy()), media)

    # -- helpers -------------------------------------------------------------------------------------------
    def _on_copy_stream(self):
        import torch

        return torch.cuda.stream(self.copy_stream) if self.copy_stream is not None else contextlib.nullcontext()

    def _record(self) -> Any:
        if self.copy_stream is None:
            return None
        import torch

        event = torch.cuda.Event()
        event.record(self.copy_stream)
        return event

    def _fell_back(self, what: str) -> None:
        self.fallbacks += 1
        if self.on_fallback is not None:
            self.on_fallback(what)
