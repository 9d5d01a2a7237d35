"""Text-to-image routes: POST /generate (one image, binary) and the OpenAI-compatible /v1/images/generations."""
# No `from __future__ import annotations`: the request models are built per app inside generation_router, and
# FastAPI must see the classes themselves (not names it cannot resolve) to read them as JSON bodies.

import asyncio
import base64
import math
import secrets
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from serving.api.schemas import MAX_SEED, ImagesResponse, build_request_models, error_responses
from serving.backends.base import GenerationParams
from serving.core.errors import InvalidRequest, ServingError, Unavailable
from serving.core.imaging import MEDIA_TYPES as IMAGE_TYPES
from serving.core.imaging import OUTPUT_TYPES
from serving.core.imaging import encode_image
from serving.core.img2img import with_init_image
from serving.engine.state import ServerState

# Images larger than this are encoded off the event loop (PNG of 512x512 takes milliseconds).
INLINE_ENCODE_PIXELS = 256 * 256

IMAGE_HEADERS = {
    "X-Seed": {"description": "Seed used (send it back to reproduce the image)", "schema": {"type": "integer"}},
    "X-Inference-Ms": {"description": "Milliseconds spent in the pipeline", "schema": {"type": "number"}},
    "X-Request-ID": {"description": "Request id, also in the server log", "schema": {"type": "string"}},
}


class NotAcceptable(ServingError):
    status = 406
    type = "not_acceptable"

    def __init__(self, accept: str):
        super().__init__(f"Accept {accept[:100]!r} allows none of image/png, image/jpeg, image/webp", param="Accept")


def negotiate_image_type(accept: str | None) -> str:
    """Pick PNG, JPEG or WebP from an Accept header (q-values honoured; PNG when anything goes)."""
    if not accept or not accept.strip():
        return "image/png"
    ranked: list[tuple[float, int, str]] = []
    for index, item in enumerate(accept.split(",")):
        parts = [p.strip() for p in item.split(";")]
        media = parts[0].lower()
        q = 1.0
        for p in parts[1:]:
            if p.lower().startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = math.nan
        # RFC 9110 12.4.2: q is 0..1. A malformed, non-finite (nan, inf) or out-of-range weight makes the media
        # range invalid, so it is ignored rather than accepted (nan would otherwise compare as "not <= 0").
        if not (math.isfinite(q) and 0 < q <= 1):
            continue
        if media in IMAGE_TYPES:
            ranked.append((q, -index, media))
        elif media in ("image/*", "*/*"):
            ranked.append((q - 1e-6, -index, "image/png"))
    if not ranked:
        raise NotAcceptable(accept)
    return max(ranked)[2]


async def encode_images(images: list, media_type: str) -> list[bytes]:
    if sum(i.width * i.height for i in images) <= INLINE_ENCODE_PIXELS:
        return [encode_image(i, media_type) for i in images]
    return await asyncio.to_thread(lambda: [encode_image(i, media_type) for i in images])


def resolve_params(state: ServerState, body, width: int | None, height: int | None, n: int = 1) -> GenerationParams:
    """The request's parameters with the model's defaults filled in and a random seed when none was sent."""
    d = state.defaults
    if d is None:
        raise Unavailable("model is still loading; retry shortly", headers={"Retry-After": "5"})
    return GenerationParams(
        prompt=body.prompt,
        negative_prompt=body.negative_prompt,
        width=width or d.width,
        height=height or d.height,
        steps=body.num_inference_steps or d.steps,
        guidance_scale=d.guidance_scale if body.guidance_scale is None else body.guidance_scale,
        seed=secrets.randbelow(MAX_SEED + 1) if body.seed is None else body.seed,
        n=n,
    )


def note_generation(state: ServerState, request: Request, route: str, params: GenerationParams, result=None) -> None:
    """Add the generation's fields to the request's log line (and name its metrics route)."""
    fields = request.scope["state"]["log_fields"]
    fields.update(route=route, size=f"{params.width}x{params.height}", steps=params.steps, n=params.n, seed=params.seed)
    if result is not None:
        fields.update(inference_ms=round(result.inference_ms, 2), queue_ms=round(result.queue_ms, 2))
    if state.settings.log_prompts:
        fields["prompt"] = params.prompt


def count_images(state: ServerState, result) -> None:
    if state.metrics is not None:
        state.metrics.images.inc(len(result.images))
        state.metrics.inference.observe(result.inference_ms / 1000)


def add_generation_routes(app: FastAPI, state: ServerState) -> None:
    s = state.settings
    GenerateRequest, OpenAIImageRequest = build_request_models(s)

    @app.post(
        "/generate",
        summary="Generate one image",
        response_class=Response,
        responses={
            200: {
                "description": "The image; PNG unless Accept asks for image/jpeg or image/webp",
                "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES},
                "headers": IMAGE_HEADERS,
            },
            **error_responses(400, 401, 406, 413, 422, 429, 503, 504),
        },
    )
    async def generate(body: GenerateRequest, request: Request):
        media_type = negotiate_image_type(request.headers.get("accept"))
        params = resolve_params(state, body, body.width, body.height)
        params = await with_init_image(params, body.image, body.strength, s, body.width, body.height)
        note_generation(state, request, "generate", params)
        result = await state.engine.generate(params)
        note_generation(state, request, "generate", params, result)
        (data,) = await encode_images(result.images[:1], media_type)
        count_images(state, result)
        return Response(
            data,
            media_type=media_type,
            headers={"X-Seed": str(params.seed), "X-Inference-Ms": f"{result.inference_ms:.1f}"},
        )

    @app.post(
        "/v1/images/generations",
        name="openai",
        summary="OpenAI-compatible image generation",
        response_model=ImagesResponse,
        responses={200: {"headers": IMAGE_HEADERS}, **error_responses(400, 401, 413, 429, 503, 504)},
    )
    async def openai_generations(body: OpenAIImageRequest, request: Request):
        if body.response_format == "url":
            raise InvalidRequest(
                "response_format 'url' is not supported: this server stores no images; use 'b64_json'", param="response_format"
            )
        width = height = None
        if body.size and body.size != "auto":
            width, height = (int(v) for v in body.size.split("x"))
            for name, value in (("width", width), ("height", height)):
                if value % 8 or not s.min_image_size <= value <= s.max_image_size:
                    raise InvalidRequest(
                        f"size: {name} {value} must be a multiple of 8 within {s.min_image_size}..{s.max_image_size}",
                        param="size",
                    )
        params = resolve_params(state, body, width, height, n=body.n)
        note_generation(state, request, "openai", params)
        result = await state.engine.generate(params)
        note_generation(state, request, "openai", params, result)
        encoded = await encode_images(result.images, OUTPUT_TYPES[body.output_format])
        count_images(state, result)
        payload = {"created": int(time.time()), "output_format": body.output_format,
                   "data": [{"b64_json": base64.b64encode(b).decode()} for b in encoded]}
        return JSONResponse(payload, headers={"X-Seed": str(params.seed), "X-Inference-Ms": f"{result.inference_ms:.1f}"})
