"""Probes, the endpoint inventory and the playground page: the routes that generate nothing."""
from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from serving.api.responses import json_error
from serving.api.schemas import Endpoint, Health, Readiness, error_responses
from serving.engine.state import ServerState

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

log = logging.getLogger("serving.api")


def add_probe_routes(app: FastAPI, state: ServerState) -> None:
    s = state.settings

    @app.get("/healthz", summary="Liveness: 200 unless the accelerator (or the model load) failed for good",
                response_model=Health, responses=error_responses(503))
    async def healthz():
        if state.failed:
            # Liveness fails so the kubelet restarts the container: a new process gets a fresh CUDA context.
            return json_error(503, "unhealthy: the accelerator is unusable; this server needs a restart", "unavailable")
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: 200 once loaded and warmed up, 503 before and while draining",
                response_model=Readiness, responses=error_responses(503))
    async def readyz():
        if not state.ready:
            return json_error(503, f"not ready: {state.phase}", "unavailable", headers={"Retry-After": "1"})
        return {"status": "ready", "device": state.device or "unknown", "model": Path(s.model).name}

    @app.get(
        "/v1/endpoints",
        name="endpoints",
        summary="Inference endpoints of this deployment (public node IP + NodePort), for devices to pick the nearest",
        response_model=list[Endpoint],
        # server_name and ca_spki_sha256 appear only on a TLS server.
        response_model_exclude_unset=True,
        responses=error_responses(401, 404, 503),
    )
    async def endpoints():
        if state.inventory is None:
            return json_error(404, "endpoint inventory is not enabled on this server (--inventory-service or --inventory-file)", "not_found")
        try:
            items = await state.inventory.list_endpoints()
            if state.tls is not None:
                tls_fields = state.tls.endpoint_fields()
                # A name the inventory derived per node (publicly trusted certificates) beats the fixed one.
                items = [{**tls_fields, **item} for item in items]
            return items
        except Exception as exc:
            log.warning("inventory lookup failed", extra={"fields": {"error": repr(exc)[:300]}})
            return json_error(503, "the Kubernetes API did not answer the inventory lookup; retry shortly", "unavailable",
                              headers={"Retry-After": "2"})

    @app.get("/", summary="Playground page", response_class=HTMLResponse,
                responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}}, **error_responses(404)})
    async def playground():
        index = STATIC_DIR / "index.html"
        if not index.is_file():
            return json_error(404, "the playground assets (serving/static) are not installed", "not_found")
        return HTMLResponse(index.read_text())
