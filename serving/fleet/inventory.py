"""Endpoint inventory: which nodes serve the model right now, read from the in-cluster Kubernetes API (objects.py
turns the objects into URLs)."""
from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path
from urllib.parse import quote

import httpx

from serving.fleet.objects import (  # noqa: F401 - InventoryError and the helpers are this module's API too
    DEFAULT_API_URL,
    InventoryError,
    SERVICE_ACCOUNT_DIR,
    SERVICE_NAME_LABEL,
    endpoints_from_objects,
    node_dns_name,
    node_external_ip,
    node_port_from_service,
)

_LIST_PAGE_SIZE = 500

class KubernetesInventory:
    """Reads the serving endpoints through the in-cluster Kubernetes API, cached for a few seconds.

    Needs RBAC: get/list/watch ``endpointslices`` (discovery.k8s.io) in the namespace, get/list ``nodes``,
    and get ``services`` in the namespace only when ``node_port`` is not given.
    """

    def __init__(
        self,
        service: str,
        namespace: str | None = None,
        node_port: int | None = None,
        *,
        api_url: str = DEFAULT_API_URL,
        service_account_dir: str | Path = SERVICE_ACCOUNT_DIR,
        cache_ttl: float = 5.0,
        timeout: float = 5.0,
        stale_wait: float = 1.0,
        transport: httpx.AsyncBaseTransport | None = None,
        scheme: str = "http",
        node_domain: str | None = None,
    ) -> None:
        if not service:
            raise ValueError("service must be the name of the serving Service (e.g. 'edge-diffusion')")
        if node_port is not None:
            # Validates the port the same way the pure function does, at construction time.
            endpoints_from_objects([], [], node_port, scheme)
        if cache_ttl < 0:
            raise ValueError(f"cache_ttl must be >= 0 seconds, got {cache_ttl!r}")
        self.service = service
        self.service_account_dir = Path(service_account_dir)
        self.namespace = namespace or self._read_namespace()
        self.node_port = node_port
        self.scheme = scheme
        self.node_domain = node_domain
        self.api_url = api_url.rstrip("/")
        self.cache_ttl = cache_ttl
        self.timeout = timeout
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self.stale_wait = stale_wait
        self._cached: list[dict] | None = None
        self._cached_at = 0.0
        self._refresh: asyncio.Task | None = None
        self._node_addresses: dict[str, str] = {}

    def _read_namespace(self) -> str:
        path = self.service_account_dir / "namespace"
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise InventoryError(
                f"namespace not given and {path} is unreadable ({exc.strerror}); pass --inventory-namespace"
            ) from exc

    def _token(self) -> str:
        # Projected service-account tokens are rotated by the kubelet, so the file is re-read per refresh.
        path = self.service_account_dir / "token"
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise InventoryError(
                f"cannot read the service-account token {path} ({exc.strerror}); the pod needs "
                "automountServiceAccountToken: true and a ServiceAccount bound to the inventory Role"
            ) from exc

    def _http_client(self) -> httpx.AsyncClient:
        if self._client is None:
            verify: ssl.SSLContext | bool = True
            if self._transport is None:
                ca_path = self.service_account_dir / "ca.crt"
                try:
                    verify = ssl.create_default_context(cafile=str(ca_path))
                except (OSError, ssl.SSLError) as exc:
                    raise InventoryError(f"cannot load the cluster CA {ca_path}: {exc}") from exc
            self._client = httpx.AsyncClient(
                base_url=self.api_url, verify=verify, transport=self._transport, timeout=self.timeout
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _get(self, path: str, params: dict[str, str] | None = None) -> dict:
        client = self._http_client()
        headers = {"Authorization": f"Bearer {self._token()}", "Accept": "application/json"}
        try:
            response = await client.get(path, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise InventoryError(f"Kubernetes API request GET {path} failed: {exc!r}") from exc
        if response.status_code != 200:
            try:
                detail = response.json().get("message") or response.text
            except ValueError:
                detail = response.text
            hint = ""
            if response.status_code in (401, 403):
                hint = " (check the ServiceAccount token and the inventory Role/ClusterRole bindings)"
            raise InventoryError(
                f"Kubernetes API GET {path} returned {response.status_code}: {detail.strip()[:300]}{hint}"
            )
        try:
            return response.json()
        except ValueError as exc:
            raise InventoryError(f"Kubernetes API GET {path} returned invalid JSON") from exc

    async def _list(self, path: str, params: dict[str, str] | None = None) -> list[dict]:
        items: list[dict] = []
        query = {**(params or {}), "limit": str(_LIST_PAGE_SIZE)}
        while True:
            page = await self._get(path, query)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            query = {**query, "continue": token}

    async def _fetch(self) -> list[dict]:
        namespace = quote(self.namespace, safe="")
        slices_call = self._list(
            f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
            {"labelSelector": f"{SERVICE_NAME_LABEL}={self.service}"},
        )
        calls = [slices_call, self._list("/api/v1/nodes")]
        if self.node_port is None:
            calls.append(self._get(f"/api/v1/namespaces/{namespace}/services/{quote(self.service, safe='')}"))
        # Wait for every read (none is left running unobserved), then report the first failure.
        results = await asyncio.gather(*calls, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        slices, nodes = results[0], results[1]
        node_port = node_port_from_service(results[2]) if self.node_port is None else self.node_port
        return endpoints_from_objects(slices, nodes, node_port, self.scheme, self.node_domain)

    async def list_endpoints(self) -> list[dict]:
        """The endpoints, read at most once per ``cache_ttl`` by one refresh at a time. When the API is slow or down
        (a Local Zone cut off from its region) callers wait at most ``stale_wait``, then get the last good list
        with ``"stale": true`` and its age; only with no good list yet does the failure reach them."""
        if self._cached is not None and time.monotonic() - self._cached_at < self.cache_ttl:
            return [dict(item) for item in self._cached]
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.ensure_future(self._fetch())
            self._refresh.add_done_callback(self._store)
        try:
            wait = self.stale_wait if self._cached is not None else None
            await asyncio.wait_for(asyncio.shield(self._refresh), wait)
        except Exception:  # noqa: BLE001 - TimeoutError or the refresh's own error: both mean "not fresh"
            if self._cached is None:
                raise
            age = round(time.monotonic() - self._cached_at, 1)
            return [{**item, "stale": True, "age_s": age} for item in self._cached]
        return [dict(item) for item in self._cached]

    async def node_address(self, node_name: str) -> str:
        """The ExternalIP of one node (WebRTC candidates advertise it), read once: a node's public IP is fixed for
        its lifetime."""
        if node_name not in self._node_addresses:
            node = await self._get(f"/api/v1/nodes/{quote(node_name, safe='')}")
            ip = node_external_ip(node)
            if ip is None:
                raise InventoryError(f"node {node_name!r} has no ExternalIP: WebRTC media cannot reach it from outside")
            self._node_addresses[node_name] = str(ip)
        return self._node_addresses[node_name]

    def _store(self, task: asyncio.Task) -> None:
        if task.cancelled():
            return
        if task.exception() is None:  # reading it also marks a failure as seen when no caller waited for it
            self._cached, self._cached_at = task.result(), time.monotonic()
