"""serving.core.img2img: the strength rule, input image decoding, and the twin pipeline sharing the weights."""
from __future__ import annotations

import base64
import io
import zlib

import pytest
from PIL import Image

from serving.core.errors import InvalidRequest
from serving.core.img2img import check_strength, decode_base64_image, decode_image, default_strength, img2img_twin


def encoded(size=(64, 64), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(("steps", "strength", "ok"), [(1, 1.0, True), (2, 0.5, True), (2, 0.49, False),
                                                       (1, 0.8, False), (25, 0.04, True), (25, 0.039, False)])
def test_steps_times_strength_must_leave_a_step(steps, strength, ok):
    if ok:
        check_strength(steps, strength)
    else:
        with pytest.raises(InvalidRequest) as err:
            check_strength(steps, strength)
        assert err.value.param == "strength" and ">= 1" in err.value.message


def test_default_strength_leaves_a_step_for_one_step_models():
    assert default_strength(1) == 1.0 and default_strength(2) == 0.8


def test_decode_checks_the_header_before_the_pixels():
    # PNG headers claiming 4000 x 4000 and 20000 x 20000 pixels (Pillow's bomb limit) are refused without
    # decoding a pixel, as a 422 naming the field.
    for side, message in ((4_000, "outside this server's bounds"), (20_000, "far larger")):
        huge = bytearray(encoded())
        huge[16:24] = side.to_bytes(4, "big") * 2  # IHDR width and height
        huge[29:33] = zlib.crc32(bytes(huge[12:29])).to_bytes(4, "big")  # the chunk's CRC over type + data
        with pytest.raises(InvalidRequest, match=message) as err:
            decode_image(bytes(huge), "image", 64, 1024)
        assert err.value.param == "image"


def test_decode_formats_sizes_and_resize():
    for fmt in ("PNG", "JPEG", "WEBP"):
        assert decode_image(encoded(fmt=fmt), "image", 64, 256).size == (64, 64)
    with pytest.raises(InvalidRequest, match="not accepted"):
        decode_image(encoded(fmt="BMP"), "image", 64, 256)
    with pytest.raises(InvalidRequest, match="multiples of 8"):
        decode_image(encoded((70, 64)), "image", 64, 256)
    # A side replaced by width/height may be any size within the bounds.
    assert decode_image(encoded((70, 64)), "image", 64, 256, width=128).size == (128, 64)
    data_url = "data:image/png;base64," + base64.b64encode(encoded()).decode()
    assert decode_base64_image(data_url, "image", 64, 256).mode == "RGB"
    with pytest.raises(InvalidRequest, match="base64"):
        decode_base64_image("%%%", "image", 64, 256)


def test_twin_shares_the_weights(cpu_backend):
    pipe = cpu_backend.pipe
    twin = img2img_twin(pipe)
    assert twin is img2img_twin(pipe)  # built once per pipeline object
    for name in ("unet", "vae", "text_encoder", "scheduler"):
        assert getattr(twin, name) is getattr(pipe, name), name
