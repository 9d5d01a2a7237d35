"""POST /v1/images/edits: OpenAI-compatible image-to-image (multipart), answered in OpenAI's error shape (400)."""
from __future__ import annotations

import base64
import time
from typing import Literal, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from serving.api.generation import count_images, encode_images, note_generation, resolve_params
from serving.api.schemas import MAX_SEED, ErrorResponse, ImagesResponse
from serving.core.errors import ServingError
from serving.core.imaging import OUTPUT_TYPES
from serving.core.img2img import with_init_image
from serving.core.prompts import require_visible_text
from serving.engine.state import ServerState

# Sent by the official client or other OpenAI SDKs; meaningless for this server, so accepted and ignored.
IGNORED_FIELDS = frozenset({"model", "user", "quality", "background", "input_fidelity", "output_compression",
                            "safety_identifier", "moderation"})


class EditRequestError(ServingError):
    """OpenAI clients map 400 to BadRequestError; /v1 routes answer validation errors with it."""

    status = 400
    type = "invalid_request_error"


def _form_model(state: ServerState) -> type[BaseModel]:
    s = state.settings

    class EditForm(BaseModel):
        # Form values arrive as strings, so numbers are parsed (lax mode); unknown fields are still refused.
        model_config = ConfigDict(extra="forbid")

        prompt: str = Field(min_length=1, max_length=s.max_prompt_length)
        n: int = Field(1, ge=1, le=s.max_images)
        size: Optional[str] = Field(None, pattern=r"^([0-9]{1,5}x[0-9]{1,5}|auto)$")
        response_format: Literal["b64_json"] = "b64_json"
        output_format: Literal["png", "jpeg", "webp"] = "png"
        strength: Optional[float] = Field(None, gt=0, le=1, allow_inf_nan=False)
        num_inference_steps: Optional[int] = Field(None, ge=1, le=s.max_steps)
        guidance_scale: Optional[float] = Field(None, ge=0, le=20, allow_inf_nan=False)
        negative_prompt: Optional[str] = Field(None, max_length=s.max_prompt_length)
        seed: Optional[int] = Field(None, ge=0, le=MAX_SEED)

        @field_validator("prompt")
        @classmethod
        def _not_blank(cls, value: str) -> str:
            return require_visible_text(value)

    return EditForm


def _size(text: str | None, s) -> tuple[int | None, int | None]:
    if text is None or text == "auto":
        return None, None
    width, height = (int(v) for v in text.split("x"))
    for name, value in (("width", width), ("height", height)):
        if value % 8 or not s.min_image_size <= value <= s.max_image_size:
            raise EditRequestError(f"size: {name} {value} must be a multiple of 8 within "
                                   f"{s.min_image_size}..{s.max_image_size}", param="size")
    return width, height


def add_edit_routes(app: FastAPI, state: ServerState) -> None:
    EditForm = _form_model(state)
    s = state.settings
    errors = {400: "Invalid field (error.param names it), a mask part, or a malformed multipart body",
              401: "Missing or wrong bearer key", 413: "Request body over 1 MiB",
              429: "Queue full; retry after Retry-After seconds", 503: "Not ready or draining",
              504: "Generation exceeded the request timeout"}

    @app.post(
        "/v1/images/edits",
        summary="OpenAI-compatible image edit (image-to-image; masks are not supported)",
        response_model=ImagesResponse,
        responses={code: {"model": ErrorResponse, "description": text} for code, text in errors.items()},
        openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["image", "prompt"],
            "properties": {"image": {"type": "string", "format": "binary"}, "prompt": {"type": "string"},
                           "n": {"type": "integer"}, "size": {"type": "string"},
                           "response_format": {"type": "string", "enum": ["b64_json"]},
                           "output_format": {"type": "string", "enum": list(OUTPUT_TYPES)},
                           "strength": {"type": "number"}}}}}}},
    )
    async def edits(request: Request):
        try:
            return await _edit(request)
        except ServingError as exc:
            if exc.status == 422:  # the shared validators raise 422; OpenAI clients expect 400
                exc = EditRequestError(exc.message, param=exc.param, headers=exc.headers)
            return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    async def _edit(request: Request):
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise EditRequestError("send multipart/form-data with an image file part and a prompt", param="image")
        try:
            form = await request.form(max_files=2, max_fields=32)
        except Exception as exc:  # noqa: BLE001 - python-multipart raises several types for malformed bodies
            raise EditRequestError(f"malformed multipart body: {str(exc)[:120]}") from None
        if "mask" in form:
            raise EditRequestError("masks are not supported: this endpoint edits the whole image", param="mask")
        images = form.getlist("image") + form.getlist("image[]")
        if len(images) != 1 or isinstance(images[0], str):
            raise EditRequestError("exactly one image file part is required", param="image")
        fields = {k: v for k, v in form.multi_items() if k not in ("image", "image[]") and k not in IGNORED_FIELDS}
        for key, value in fields.items():
            if not isinstance(value, str):
                raise EditRequestError(f"{key}: only the image part may be a file", param=key)
        if fields.pop("stream", "false").lower() in ("true", "1"):
            raise EditRequestError("streaming responses are not supported", param="stream")
        try:
            body = EditForm(**fields)
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(p) for p in first.get("loc", ())) or None
            raise EditRequestError(f"{param}: {first.get('msg')}", param=param) from None
        width, height = _size(body.size, s)
        params = resolve_params(state, body, width, height, n=body.n)
        params = await with_init_image(params, await images[0].read(), body.strength, s, width, height)
        note_generation(state, request, "openai-edits", params)
        result = await state.engine.generate(params)
        note_generation(state, request, "openai-edits", params, result)
        encoded = await encode_images(result.images, OUTPUT_TYPES[body.output_format])
        count_images(state, result)
        payload = {"created": int(time.time()), "output_format": body.output_format,
                   "data": [{"b64_json": base64.b64encode(b).decode()} for b in encoded]}
        return JSONResponse(payload, headers={"X-Seed": str(params.seed), "X-Inference-Ms": f"{result.inference_ms:.1f}"})
