"""What the client raises: each names the endpoint and, for a refused request, the server's own message."""
from __future__ import annotations


class EdgeError(RuntimeError):
    """The server refused a request (4xx other than 401) or every endpoint failed it."""

    def __init__(self, message: str, status: int | None = None, code: str | int | None = None,
                 param: str | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.param, self.url = status, code, param, url

    @classmethod
    def from_response(cls, response, url: str) -> "EdgeError":
        try:
            error = response.json().get("error") or {}
        except (ValueError, AttributeError):
            error = {}
        message = error.get("message") or response.text[:300] or response.reason_phrase
        param = error.get("param")
        where = f" (field {param})" if param else ""
        return cls(f"{url} answered {response.status_code}: {message}{where}", response.status_code,
                   error.get("code"), param, url)


class AuthError(EdgeError):
    """The credential was refused even after the provider was asked for a fresh one."""


class NoEndpointError(EdgeError):
    """No endpoint could be reached: the seeds gave no inventory, or every endpoint failed."""


class PinMismatchError(EdgeError):
    """No certificate the endpoint presented has an SPKI hash among the pins: a different CA, or an interceptor."""
