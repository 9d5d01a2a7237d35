"""The bearer credential: a fixed string (the master key today) or a provider callback (device tokens minted by
the app's backend), asked again when the server says the token expired."""
from __future__ import annotations

import threading
from typing import Callable, Union

# provider(refresh) -> token. refresh=False: the current token (the provider may cache it); True: the server
# refused it (401, or a stream closed for an expired token), so mint or fetch a new one.
Provider = Callable[[bool], str]
CredentialSource = Union[str, Provider, None]


class Credentials:
    """Thread-safe holder of the current bearer; ``None`` means the server needs no key."""

    def __init__(self, source: CredentialSource) -> None:
        if source is not None and not (isinstance(source, str) or callable(source)):
            raise TypeError("credential must be a bearer string, a callable provider(refresh: bool) -> str, or None")
        self._source = source
        self._token: str | None = source if isinstance(source, str) or source is None else None
        self._lock = threading.Lock()
        self.refreshes = 0

    @property
    def refreshable(self) -> bool:
        return callable(self._source)

    def _ask(self, refresh: bool) -> str:
        token = self._source(refresh)
        if not isinstance(token, str) or not token:
            raise TypeError(f"the credential provider returned {type(token).__name__}, expected a non-empty str")
        return token

    def token(self) -> str | None:
        with self._lock:
            if self._token is None and callable(self._source):
                self._token = self._ask(False)
            return self._token

    def refresh(self, stale: str | None) -> str | None:
        """A new token, unless another thread already replaced ``stale`` (one refresh per expiry, not one per
        request that saw it)."""
        with self._lock:
            if not callable(self._source):
                return self._token
            if self._token == stale or self._token is None:
                self._token = self._ask(True)
                self.refreshes += 1
            return self._token

    def headers(self, token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"} if token else {}
