"""The FastAPI app: every route family mounted behind the gateway middleware."""
from __future__ import annotations

import json

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles

from serving.api.gateway import MAX_BODY_BYTES, PUBLIC_PATHS, GatewayMiddleware
from serving.api.generation import add_generation_routes, negotiate_image_type
from serving.api.probes import STATIC_DIR, add_probe_routes
from serving.api.edits import add_edit_routes
from serving.api.responses import OPENAI_PREFIX, install_error_handlers
from serving.engine.state import ServerState
from serving.stream.webrtc import add_webrtc_routes
from serving.stream.websocket import add_stream_routes

__all__ = ["MAX_BODY_BYTES", "PUBLIC_PATHS", "create_app", "negotiate_image_type"]


def create_app(state: ServerState) -> FastAPI:
    s = state.settings
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
    install_error_handlers(app)
    # Each family adds its routes to the app itself: app.include_router would hide them behind one lazy router
    # entry in app.routes, which the route listings (tests, chart probes) read.
    add_generation_routes(app, state)
    add_probe_routes(app, state)
    add_edit_routes(app, state)
    add_stream_routes(app, state)
    add_webrtc_routes(app, state)
    # check_dir=False: the directory may be added after the app is built (and is absent in slim images).
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    app.add_middleware(GatewayMiddleware, state=state, routes=app.router.routes)
    app.openapi = lambda: _openapi(app)
    return app


def _openapi(app: FastAPI) -> dict:
    """FastAPI documents a 422 on every route with a body; /v1 routes answer validation errors with 400."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for path, operations in schema["paths"].items():
            if path.startswith(OPENAI_PREFIX):
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
        if '"#/components/schemas/HTTPValidationError"' not in json.dumps(schema["paths"]):
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema
