"""A static endpoint inventory (--inventory-file): the list GET /v1/endpoints answers, read from a JSON file.

For local runs and tests, where several servers on one machine stand in for zones and no Kubernetes API exists.
The file holds what /v1/endpoints answers: a JSON list of ``{"url", "zone", "accelerator", "ready",
"server_name", "ca_spki_sha256"}`` objects (only ``url`` is required; ``stream_url`` is derived when absent,
``ready`` defaults to true). It is read again when it changes, so editing it (say, "ready": false) takes effect
without a restart; a broken edit keeps the last good list, marked stale, and is logged.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

from serving.fleet.objects import InventoryError, stream_url

log = logging.getLogger("serving.fleet")

_TEXT_FIELDS = ("zone", "accelerator", "server_name", "ca_spki_sha256", "stream_url")


def _check_item(index: int, item: object) -> dict:
    where = f"[{index}]"
    if not isinstance(item, dict):
        raise InventoryError(f"{where}: each endpoint must be a JSON object with at least a url")
    unknown = sorted(set(item) - {"url", "ready", *_TEXT_FIELDS})
    if unknown:
        raise InventoryError(f"{where}.{unknown[0]}: unknown field (allowed: url, ready, {', '.join(_TEXT_FIELDS)})")
    url = item.get("url")
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise InventoryError(f"{where}.url: must be http(s)://HOST:PORT with no path, got {url!r}")
    try:
        parts.port  # noqa: B018 - raises on a port outside 0..65535
    except ValueError:
        raise InventoryError(f"{where}.url: the port must be a number 1..65535, got {url!r}") from None
    ready = item.get("ready", True)
    if not isinstance(ready, bool):
        raise InventoryError(f"{where}.ready: must be true or false, got {ready!r}")
    for name in _TEXT_FIELDS:
        if item.get(name) is not None and not isinstance(item[name], str):
            raise InventoryError(f"{where}.{name}: must be a string or null, got {item[name]!r}")
    base = url.rstrip("/")
    return {**item, "url": base, "stream_url": item.get("stream_url") or stream_url(base), "ready": ready}


def read_inventory_file(path: str | Path) -> list[dict]:
    """The file's endpoints, checked; InventoryError names the file, the item and the field that is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise InventoryError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise InventoryError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, list):
        raise InventoryError(f"{path} must hold a JSON list of endpoints, e.g. [{{\"url\": \"http://127.0.0.1:8080\"}}]")
    try:
        return [_check_item(i, item) for i, item in enumerate(data)]
    except InventoryError as exc:
        raise InventoryError(f"{path}: {exc}") from None


class StaticInventory:
    """GET /v1/endpoints from a file, re-read when the file's identity (inode, size, mtime) changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._identity = self._stat()
        self._items = read_inventory_file(self.path)  # a bad file fails the start (exit 2)
        self._read_at = time.monotonic()
        self._stale = False

    def _stat(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    async def list_endpoints(self) -> list[dict]:
        identity = self._stat()
        if identity != self._identity:
            self._identity = identity
            try:
                self._items, self._read_at, self._stale = read_inventory_file(self.path), time.monotonic(), False
            except InventoryError as exc:
                self._stale = True
                log.warning("inventory file unreadable; serving the last good list", extra={"fields": {"error": str(exc)}})
        if self._stale:
            age = round(time.monotonic() - self._read_at, 1)
            return [{**item, "stale": True, "age_s": age} for item in self._items]
        return [dict(item) for item in self._items]

    async def aclose(self) -> None:
        return None
