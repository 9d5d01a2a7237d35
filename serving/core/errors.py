"""Errors that map to HTTP answers; every one renders as {"error": {"message", "type", "param", "code"}}."""
from __future__ import annotations


class ServingError(Exception):
    status = 500
    type = "server_error"

    def __init__(self, message: str, param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.status}}


class InvalidRequest(ServingError):
    status = 422
    type = "invalid_request_error"


class QueueFull(ServingError):
    status = 429
    type = "rate_limit_error"


class Unavailable(ServingError):
    """Not ready, draining, or the accelerator failed this request (the engine marks the server failed when it keeps failing)."""

    status = 503
    type = "unavailable"


class GenerationTimeout(ServingError):
    status = 504
    type = "timeout"


class GenerationCancelled(Exception):
    """Raised inside the denoising loop (step callback) to stop a generation whose request is gone."""
