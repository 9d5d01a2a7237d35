"""The hand-written PNG encoder must round-trip exactly through a standard decoder."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from serving.core.imaging import encode_image, encode_png


@pytest.mark.parametrize("shape", [(1, 1, 3), (64, 64, 3), (37, 91, 3), (16, 8, 4), (9, 5, 1), (7, 3)])
def test_png_round_trips_losslessly(shape):
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, size=shape, dtype=np.uint8)
    decoded = Image.open(io.BytesIO(encode_png(pixels)))
    decoded.load()  # verifies the chunk CRCs and the zlib stream
    assert np.array_equal(np.asarray(decoded).reshape(pixels.shape), pixels)


def test_png_of_smooth_image_compresses():
    y, x = np.mgrid[0:256, 0:256]
    pixels = np.stack([x, y, (x + y) // 2], axis=-1).astype(np.uint8)
    assert len(encode_png(pixels)) < pixels.nbytes / 10


def test_png_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((2, 2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="channels"):
        encode_png(np.zeros((2, 2, 2), dtype=np.uint8))


@pytest.mark.parametrize(("media_type", "fmt"), [("image/png", "PNG"), ("image/jpeg", "JPEG"), ("image/webp", "WEBP")])
def test_encode_image_formats(media_type, fmt):
    image = Image.new("RGB", (24, 16), (200, 10, 30))
    decoded = Image.open(io.BytesIO(encode_image(image, media_type)))
    assert decoded.format == fmt and decoded.size == (24, 16)
    if fmt == "PNG":
        assert np.array_equal(np.asarray(decoded), np.asarray(image))
