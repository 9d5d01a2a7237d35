"""Request and response models; request bounds (and so the OpenAPI schema) follow the server's configuration."""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from serving.core.prompts import require_visible_text
from serving.core.settings import Settings

MAX_SEED = 2**32 - 1
MAX_GUIDANCE = 20.0


class ErrorDetail(BaseModel):
    message: str = Field(description="What is wrong and how to fix it")
    type: str = Field(description="Error class, e.g. invalid_request_error, rate_limit_error, timeout")
    param: Optional[str] = Field(None, description="The request field at fault, when there is one")
    code: Optional[int] = Field(None, description="HTTP status code")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ImageData(BaseModel):
    b64_json: str = Field(description="Base64-encoded PNG")
    revised_prompt: Optional[str] = None


class ImagesResponse(BaseModel):
    created: int = Field(description="Unix time of creation")
    data: list[ImageData]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    device: str
    model: str


class Endpoint(BaseModel):
    url: str
    stream_url: Optional[str] = Field(None, description="The endpoint's WebSocket frame stream (GET /v1/stream)")
    webrtc_url: Optional[str] = Field(None, description="The endpoint's WebRTC frame stream: POST an SDP offer here")
    zone: Optional[str] = None
    accelerator: Optional[str] = None
    ready: bool
    server_name: Optional[str] = Field(None, description="With TLS: the name to verify in the certificate (connect to the url's IP, send this as SNI)")
    ca_spki_sha256: Optional[str] = Field(None, description="With a private CA: base64 SHA-256 of the CA's SubjectPublicKeyInfo, for pinning")
    stale: Optional[bool] = Field(None, description="true when the Kubernetes API did not answer: this is the last good list")
    age_s: Optional[float] = Field(None, description="With stale: seconds since the list was read")


ERROR_TEXT = {
    400: "Malformed request (body not JSON, bad Content-Length, two Authorization headers); on /v1 routes also an "
         "invalid field (error.param names it), as OpenAI answers",
    401: "Missing or wrong bearer key",
    404: "Not found / not configured",
    406: "No acceptable image type in Accept",
    413: "Request body over 1 MiB",
    422: "A field is invalid; error.param names it",
    429: "Queue full; retry after Retry-After seconds",
    503: "Not ready, draining, or the accelerator failed this request (or failed for good: see /healthz)",
    504: "Generation exceeded the request timeout",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given error statuses, all in the ErrorResponse shape."""
    return {code: {"model": ErrorResponse, "description": ERROR_TEXT[code]} for code in codes}


def build_request_models(s: Settings) -> tuple[type[BaseModel], type[BaseModel]]:
    size = dict(ge=s.min_image_size, le=s.max_image_size, multiple_of=8)

    class GenerationFields(BaseModel):
        # Strict: "64" or true is not silently an integer; a client bug should surface as a 422 naming the field.
        model_config = ConfigDict(extra="forbid", strict=True)

        prompt: str = Field(min_length=1, max_length=s.max_prompt_length, description="What to draw")
        negative_prompt: Optional[str] = Field(None, max_length=s.max_prompt_length, description="What to avoid")
        num_inference_steps: Optional[int] = Field(None, ge=1, le=s.max_steps, description="Denoising steps (model default when omitted)")
        guidance_scale: Optional[float] = Field(
            None, ge=0, le=MAX_GUIDANCE, allow_inf_nan=False, description="Classifier-free guidance; 0 disables it"
        )
        seed: Optional[int] = Field(None, ge=0, le=MAX_SEED, description="Same seed and parameters give the same image")

        @field_validator("prompt")
        @classmethod
        def _not_blank(cls, value: str) -> str:
            return require_visible_text(value)

    class GenerateRequest(GenerationFields):
        width: Optional[int] = Field(None, **size, description="Image width in pixels, a multiple of 8")
        height: Optional[int] = Field(None, **size, description="Image height in pixels, a multiple of 8")
        image: Optional[str] = Field(None, description="Image-to-image: base64 PNG, JPEG or WebP to start from; the "
                                     "output keeps its size unless width/height are given (then it is resized)")
        strength: Optional[float] = Field(None, gt=0, le=1, allow_inf_nan=False, description="Image-to-image: how "
                                          "much to repaint, 0 < s <= 1 (default 0.8; 1.0 for 1-step models)")

    class OpenAIImageRequest(GenerationFields):
        n: int = Field(1, ge=1, le=s.max_images, description="Number of images")
        size: Optional[str] = Field(None, pattern=r"^([0-9]{1,5}x[0-9]{1,5}|auto)$",
                                    description="WIDTHxHEIGHT, e.g. 512x512; auto (or omitted) is the model's default size")
        output_format: Literal["png", "jpeg", "webp"] = Field("png", description="Encoding of the returned images")
        response_format: Optional[Literal["b64_json", "url"]] = Field(
            None, description="Only b64_json is supported (this server stores no images)"
        )
        model: Optional[str] = Field(None, max_length=256, description="Accepted for compatibility; the served model is fixed")
        user: Optional[str] = Field(None, max_length=256, description="Accepted for compatibility; ignored")
        quality: Optional[str] = Field(None, max_length=32, description="Accepted for compatibility; ignored")
        style: Optional[str] = Field(None, max_length=32, description="Accepted for compatibility; ignored")

    return GenerateRequest, OpenAIImageRequest
