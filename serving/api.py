"""Public HTTP API (port 8080): /generate, OpenAI-compatible /v1/images/generations, probes, playground."""
import asyncio
import base64
import hmac
import json
import logging
import math
import secrets
import time
import uuid
from pathlib import Path
from typing import Any, Literal, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.backends.base import GenerationParams
from serving.errors import InvalidRequest, ServingError, Unavailable
from serving.imaging import MEDIA_TYPES as IMAGE_TYPES
from serving.imaging import encode_image
from serving.state import ServerState

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_BODY_BYTES = 1024 * 1024
MAX_SEED = 2**32 - 1
MAX_GUIDANCE = 20.0
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/"})
# Images larger than this are encoded off the event loop (PNG of 512x512 takes milliseconds).
INLINE_ENCODE_PIXELS = 256 * 256

access_log = logging.getLogger("serving.access")
log = logging.getLogger("serving.api")


# -- response models ---------------------------------------------------------------------------------------
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
    zone: Optional[str] = None
    accelerator: Optional[str] = None
    ready: bool


def _error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Malformed request (e.g. the body is not JSON, or a bad Content-Length)",
        401: "Missing or wrong bearer key",
        404: "Not found / not configured",
        406: "No acceptable image type in Accept",
        413: "Request body over 1 MiB",
        422: "A field is invalid; error.param names it",
        429: "Queue full; retry after Retry-After seconds",
        503: "Not ready, draining, or the accelerator failed this request (or failed for good: see /healthz)",
        504: "Generation exceeded the request timeout",
    }
    return {code: {"model": ErrorResponse, "description": text[code]} for code in codes}


def build_request_models(state: ServerState) -> tuple[type[BaseModel], type[BaseModel]]:
    """Request models whose bounds (and so the OpenAPI schema) follow the server's configuration."""
    s = state.settings
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
            if not value.strip():
                raise ValueError("must contain non-whitespace text")
            return value

    class GenerateRequest(GenerationFields):
        width: Optional[int] = Field(None, **size, description="Image width in pixels, a multiple of 8")
        height: Optional[int] = Field(None, **size, description="Image height in pixels, a multiple of 8")

    class OpenAIImageRequest(GenerationFields):
        n: int = Field(1, ge=1, le=s.max_images, description="Number of images")
        size: Optional[str] = Field(None, pattern=r"^[0-9]{1,5}x[0-9]{1,5}$", description="WIDTHxHEIGHT, e.g. 512x512")
        response_format: Optional[Literal["b64_json", "url"]] = Field(
            None, description="Only b64_json is supported (this server stores no images)"
        )
        model: Optional[str] = Field(None, max_length=256, description="Accepted for compatibility; the served model is fixed")
        user: Optional[str] = Field(None, max_length=256, description="Accepted for compatibility; ignored")
        quality: Optional[str] = Field(None, max_length=32, description="Accepted for compatibility; ignored")
        style: Optional[str] = Field(None, max_length=32, description="Accepted for compatibility; ignored")

    return GenerateRequest, OpenAIImageRequest


# -- helpers -----------------------------------------------------------------------------------------------
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


def error_response(exc: ServingError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def _json_error(status: int, message: str, type_: str, param: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": status}}, status_code=status, headers=headers)


def validation_error_response(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"type": "value_error", "loc": ("body",), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        ctx = first.get("ctx") or {}
        return _json_error(400, f"request body is not valid JSON: {ctx.get('error', first.get('msg'))}", "invalid_request_error")
    if not loc:
        if first.get("type") == "missing":
            return _json_error(400, "a JSON request body is required (Content-Type: application/json)", "invalid_request_error")
        return _json_error(400, "request body must be a JSON object sent with Content-Type: application/json",
                           "invalid_request_error")
    param = ".".join(loc)
    if first.get("type") == "extra_forbidden":
        message = f"{param}: unknown field; check the spelling against /openapi.json"
    else:
        message = f"{param}: {first.get('msg')}"
        if "input" in first and not isinstance(first["input"], (dict, list)):
            message += f" (got {json.dumps(first['input'], default=str)[:80]})"
    return _json_error(422, message, "invalid_request_error", param)


# -- ASGI middleware ---------------------------------------------------------------------------------------
class GatewayMiddleware:
    """Request id, bearer auth, the 1 MiB body limit, one JSON log line and metrics per request.

    Pure ASGI (no BaseHTTPMiddleware) to keep the per-request overhead in the tens of microseconds.
    """

    def __init__(self, app, state: ServerState):
        self.app = app
        self.state = state

    def _authorized(self, scope) -> bool:
        key = self.state.api_key_bytes
        if key is None:
            return True
        path = scope["path"]
        if path in PUBLIC_PATHS or path.startswith("/static/"):
            return True
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                # compare_digest runs in time independent of where the first difference is.
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), key)
        return False

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = None
        content_length = None
        for name, value in scope["headers"]:
            if name == b"x-request-id" and 0 < len(value) <= 128 and value.isascii():
                request_id = value.decode()
            elif name == b"content-length":
                content_length = value
        request_id = request_id or uuid.uuid4().hex
        log_fields: dict[str, Any] = {}
        scope.setdefault("state", {})["log_fields"] = log_fields
        info = {"status": 500, "bytes": 0, "started": False}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                info["started"] = True
                info["status"] = message["status"]
                message["headers"] = list(message.get("headers", [])) + [(b"x-request-id", request_id.encode())]
            elif message["type"] == "http.response.body":
                info["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            if not self._authorized(scope):
                response = _json_error(
                    401, "missing or invalid API key: send 'Authorization: Bearer <key>'", "authentication_error",
                    headers={"WWW-Authenticate": 'Bearer realm="edge-diffusion"'},
                )
                await response(scope, receive, send_wrapper)
                return
            if scope["method"] in ("POST", "PUT", "PATCH"):
                too_large = _json_error(413, f"request body exceeds {MAX_BODY_BYTES} bytes (1 MiB)", "request_too_large")
                # bytes.isdigit() is ASCII-only, so this also rejects signs ("-1"), spaces and empty values.
                if content_length is not None and not content_length.isdigit():
                    bad = _json_error(400, "Content-Length header must be a non-negative integer", "invalid_request_error",
                                      param="Content-Length")
                    await bad(scope, receive, send_wrapper)
                    return
                if content_length is not None and int(content_length) > MAX_BODY_BYTES:
                    await too_large(scope, receive, send_wrapper)
                    return
                body, ok = await self._read_body(receive)
                if not ok:
                    await too_large(scope, receive, send_wrapper)
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_wrapper)
        except Exception:
            # Handled here rather than by an app-level Exception handler: Starlette runs that one in its outermost
            # ServerErrorMiddleware, which sends through the raw `send` (no X-Request-ID, 500 missing from our
            # request log) and re-raises, so uvicorn logs the traceback a second time.
            if info["started"]:
                raise  # too late for an error response; the server logs it and closes the connection
            log.exception("unhandled error", extra={"fields": {"request_id": request_id, "method": scope["method"],
                                                               "path": scope["path"]}})
            response = _json_error(500, "internal error; the request id is in the X-Request-ID header", "server_error")
            await response(scope, receive, send_wrapper)
        finally:
            self._record(scope, request_id, started, info, log_fields)

    @staticmethod
    async def _read_body(receive) -> tuple[bytes, bool]:
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", True
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > MAX_BODY_BYTES:
                return b"", False
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), True

    def _record(self, scope, request_id, started, info, fields) -> None:
        elapsed = time.perf_counter() - started
        route = fields.pop("route", None)
        metrics = self.state.metrics
        if metrics is not None:
            metrics.requests.labels(route or "other", str(info["status"])).inc()
            if route in ("generate", "openai") and info["status"] == 200:
                metrics.latency.labels(route).observe(elapsed)
        entry = {
            "request_id": request_id,
            "method": scope["method"],
            "path": scope["path"],
            "status": info["status"],
            "latency_ms": round(elapsed * 1000, 2),
            "bytes": info["bytes"],
        }
        entry.update(fields)
        if scope["path"] in ("/healthz", "/readyz") and info["status"] == 200:
            access_log.debug("request", extra={"fields": entry})
        else:
            access_log.info("request", extra={"fields": entry})


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


# -- the app -----------------------------------------------------------------------------------------------
def create_app(state: ServerState) -> FastAPI:
    s = state.settings
    GenerateRequest, OpenAIImageRequest = build_request_models(state)
    app = FastAPI(
        title="edge-diffusion inference API",
        version="1.0.0",
        description=(
            "Stable Diffusion text-to-image. Send `Authorization: Bearer <key>` when the server has a key "
            f"(all routes except /healthz, /readyz, / and /static). Prompts up to {s.max_prompt_length} characters; "
            f"width/height multiples of 8 in {s.min_image_size}..{s.max_image_size}; at most {s.max_steps} steps."
        ),
        docs_url=None,
        redoc_url=None,
        # Metrics are Prometheus on the private port and logs are our JSON lines; FastAPI's native OpenTelemetry
        # hooks would only add per-request work.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.serving = state

    @app.exception_handler(ServingError)
    async def _serving_error(_: Request, exc: ServingError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError):
        return validation_error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request_error")
        return _json_error(exc.status_code, str(exc.detail), kind, headers=getattr(exc, "headers", None))

    def resolve(body, width: int | None, height: int | None, n: int = 1) -> GenerationParams:
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

    def note(request: Request, route: str, params: GenerationParams, result=None) -> None:
        fields = request.scope["state"]["log_fields"]
        fields.update(route=route, size=f"{params.width}x{params.height}", steps=params.steps, n=params.n, seed=params.seed)
        if result is not None:
            fields.update(inference_ms=round(result.inference_ms, 2), queue_ms=round(result.queue_ms, 2))
        if s.log_prompts:
            fields["prompt"] = params.prompt

    image_headers = {
        "X-Seed": {"description": "Seed used (send it back to reproduce the image)", "schema": {"type": "integer"}},
        "X-Inference-Ms": {"description": "Milliseconds spent in the pipeline", "schema": {"type": "number"}},
        "X-Request-ID": {"description": "Request id, also in the server log", "schema": {"type": "string"}},
    }

    @app.post(
        "/generate",
        summary="Generate one image",
        response_class=Response,
        responses={
            200: {
                "description": "The image; PNG unless Accept asks for image/jpeg or image/webp",
                "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES},
                "headers": image_headers,
            },
            **_error_responses(400, 401, 406, 413, 422, 429, 503, 504),
        },
    )
    async def generate(body: GenerateRequest, request: Request):
        media_type = negotiate_image_type(request.headers.get("accept"))
        params = resolve(body, body.width, body.height)
        note(request, "generate", params)
        result = await state.engine.generate(params)
        note(request, "generate", params, result)
        (data,) = await encode_images(result.images[:1], media_type)
        if state.metrics is not None:
            state.metrics.images.inc(len(result.images))
            state.metrics.inference.observe(result.inference_ms / 1000)
        return Response(
            data,
            media_type=media_type,
            headers={"X-Seed": str(params.seed), "X-Inference-Ms": f"{result.inference_ms:.1f}"},
        )

    @app.post(
        "/v1/images/generations",
        summary="OpenAI-compatible image generation",
        response_model=ImagesResponse,
        responses={200: {"headers": image_headers}, **_error_responses(400, 401, 413, 422, 429, 503, 504)},
    )
    async def openai_generations(body: OpenAIImageRequest, request: Request):
        if body.response_format == "url":
            raise InvalidRequest(
                "response_format 'url' is not supported: this server stores no images; use 'b64_json'", param="response_format"
            )
        width = height = None
        if body.size:
            width, height = (int(v) for v in body.size.split("x"))
            for name, value in (("width", width), ("height", height)):
                if value % 8 or not s.min_image_size <= value <= s.max_image_size:
                    raise InvalidRequest(
                        f"size: {name} {value} must be a multiple of 8 within {s.min_image_size}..{s.max_image_size}",
                        param="size",
                    )
        params = resolve(body, width, height, n=body.n)
        note(request, "openai", params)
        result = await state.engine.generate(params)
        note(request, "openai", params, result)
        encoded = await encode_images(result.images, "image/png")
        if state.metrics is not None:
            state.metrics.images.inc(len(result.images))
            state.metrics.inference.observe(result.inference_ms / 1000)
        payload = {"created": int(time.time()), "data": [{"b64_json": base64.b64encode(b).decode()} for b in encoded]}
        return JSONResponse(payload, headers={"X-Seed": str(params.seed), "X-Inference-Ms": f"{result.inference_ms:.1f}"})

    @app.get("/healthz", summary="Liveness: 200 unless the accelerator (or the model load) failed for good",
             response_model=Health, responses=_error_responses(503))
    async def healthz():
        if state.failed:
            # Liveness fails so the kubelet restarts the container: a new process gets a fresh CUDA context.
            return _json_error(503, "unhealthy: the accelerator is unusable; this server needs a restart", "unavailable")
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: 200 once loaded and warmed up, 503 before and while draining",
             response_model=Readiness, responses=_error_responses(503))
    async def readyz():
        if not state.ready:
            return _json_error(503, f"not ready: {state.phase}", "unavailable", headers={"Retry-After": "1"})
        return {"status": "ready", "device": state.device or "unknown", "model": Path(s.model).name}

    @app.get(
        "/v1/endpoints",
        summary="Inference endpoints of this deployment (public node IP + NodePort), for devices to pick the nearest",
        response_model=list[Endpoint],
        responses=_error_responses(401, 404, 503),
    )
    async def endpoints():
        if state.inventory is None:
            return _json_error(404, "endpoint inventory is not enabled on this server (--inventory-service)", "not_found")
        try:
            return await state.inventory.list_endpoints()
        except Exception as exc:
            log.warning("inventory lookup failed", extra={"fields": {"error": repr(exc)[:300]}})
            return _json_error(503, "the Kubernetes API did not answer the inventory lookup; retry shortly", "unavailable",
                               headers={"Retry-After": "2"})

    @app.get("/", summary="Playground page", response_class=HTMLResponse,
             responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}}, **_error_responses(404)})
    async def playground():
        index = STATIC_DIR / "index.html"
        if not index.is_file():
            return _json_error(404, "the playground assets (serving/static) are not installed", "not_found")
        return HTMLResponse(index.read_text())

    # check_dir=False: the directory may be added after the app is built (and is absent in slim images).
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    app.add_middleware(GatewayMiddleware, state=state)
    return app
