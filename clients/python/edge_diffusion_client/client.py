"""EdgeClient: discovery, trust and credentials in one place, and the REST calls (generate, edit) with failover."""
from __future__ import annotations

import base64
import logging
import threading
from typing import Callable, Iterable

import httpx

from edge_diffusion_client.credentials import CredentialSource, Credentials
from edge_diffusion_client.discovery import Discovery
from edge_diffusion_client.endpoints import Endpoint, seed_endpoint
from edge_diffusion_client.errors import AuthError, EdgeError, NoEndpointError
from edge_diffusion_client.events import Event
from edge_diffusion_client.stream import StreamSession
from edge_diffusion_client.tls import Trust

log = logging.getLogger("edge_diffusion_client")

# Answers after which the same request goes to the next endpoint: overloaded (429), draining or not ready (503),
# or a gateway that lost the pod (502, 504 from a proxy in front).
RETRY_ELSEWHERE = {429, 502, 503, 504}


class EdgeClient:
    """Finds the nearest endpoint of a deployment and calls it.

    seeds: one or more URLs of the deployment (any endpoint; it lists the others through /v1/endpoints).
    credential: the bearer: a string (the master key) or ``provider(refresh: bool) -> str`` that returns the
    current device token and mints a new one when ``refresh`` is true (after a 401 or a stream's expiry close).
    pins / ca_file: trust for https endpoints (see tls.Trust); server_name: the name to verify on a seed given by
    IP (endpoints listed by the inventory carry their own). discover=False: the seeds are the endpoint list (no
    /v1/endpoints call), e.g. a fixed set of endpoints or a proxy in front of one.
    """

    def __init__(self, seeds: str | Iterable[str], credential: CredentialSource = None, *,
                 pins: Iterable[str] = (), ca_file: str | None = None, server_name: str | None = None,
                 probes: int = 3, refresh_interval: float = 30.0, timeout: float = 60.0, connect_timeout: float = 3.0,
                 discover: bool = True,
                 on_event: Callable[[Event], None] | None = None) -> None:
        seeds = [seeds] if isinstance(seeds, str) else list(seeds)
        pins = list(pins)
        self.credentials = Credentials(credential)
        self.trust = Trust(pins, ca_file, timeout=connect_timeout)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.on_event = on_event or (lambda _event: None)
        self._clients: dict[str, httpx.Client] = {}
        self._clients_lock = threading.Lock()
        self.discovery = Discovery(
            [seed_endpoint(url, server_name, pins[0] if pins else None) for url in seeds],
            lambda endpoint, path: self._send(endpoint, "GET", path, None, {}),
            lambda endpoint, path: self._send_authorized(endpoint, "GET", path, {}), probes, refresh_interval,
            on_change=lambda old, new: self.on_event(Event("endpoint_changed", old.url, new.url, "faster")),
            learn=self.trust.learn, discover=discover)

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> "EdgeClient":
        """Discover and choose now (raises NoEndpointError when no seed answers), then refresh in the background."""
        try:
            chosen = self.discovery.refresh()
        except ConnectionError as exc:
            raise NoEndpointError(str(exc)) from None
        if chosen is None:
            raise NoEndpointError(f"none of the endpoints answered GET /healthz: "
                                  f"{[e.url for e in self.discovery.endpoints]}")
        self.discovery.start()
        return self

    def close(self) -> None:
        self.discovery.stop()
        with self._clients_lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def __enter__(self) -> "EdgeClient":
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.close()

    def _ensure_started(self) -> None:
        if not self.discovery.endpoints:
            self.start()

    @property
    def endpoint(self) -> Endpoint | None:
        return self.discovery.current

    def http(self, endpoint: Endpoint) -> httpx.Client:
        """One kept-alive HTTP client per endpoint, verifying with that endpoint's trust."""
        with self._clients_lock:
            client = self._clients.get(endpoint.url)
            if client is None:
                context = self.trust.context(endpoint)
                client = httpx.Client(verify=context if context is not None else True,
                                      timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout))
                self._clients[endpoint.url] = client
            return client

    @staticmethod
    def extensions(endpoint: Endpoint) -> dict:
        # Connect to the listed address, verify (and send as SNI) the certificate's name.
        return {"sni_hostname": endpoint.server_name} if endpoint.tls and endpoint.server_name else {}

    # -- REST --------------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        """``method path`` on the chosen endpoint; on a transport error, a timeout or 429/502/503/504 the next
        endpoint (reported as a failover event); on 401 the credential is refreshed once."""
        self._ensure_started()
        errors: list[str] = []
        previous: tuple[Endpoint, str] | None = None
        for endpoint in self.discovery.candidates():
            if previous is not None:
                self.on_event(Event("failover", previous[0].url, endpoint.url, previous[1]))
            try:
                response = self._send_authorized(endpoint, method, path, kwargs)
            except httpx.TimeoutException:
                reason = "timeout"
            except (httpx.TransportError, OSError) as exc:
                reason = f"reset ({exc.__class__.__name__})"
            else:
                if response.status_code not in RETRY_ELSEWHERE:
                    if response.status_code >= 400:
                        raise EdgeError.from_response(response, endpoint.url)
                    return response
                reason = str(response.status_code)
            errors.append(f"{endpoint.url}: {reason}")
            previous = (endpoint, reason)
            self.discovery.mark_failed(endpoint)
        raise NoEndpointError("every endpoint failed: " + "; ".join(errors) if errors else "no endpoint is known")

    def _send_authorized(self, endpoint: Endpoint, method: str, path: str, kwargs: dict) -> httpx.Response:
        token = self.credentials.token()
        response = self._send(endpoint, method, path, token, kwargs)
        if response.status_code == 401 and self.credentials.refreshable:
            token = self.credentials.refresh(token)
            self.on_event(Event("credential_refreshed", endpoint.url, endpoint.url, "401"))
            response = self._send(endpoint, method, path, token, kwargs)
        if response.status_code == 401:
            raise AuthError.from_response(response, endpoint.url)
        return response

    def _send(self, endpoint: Endpoint, method: str, path: str, token: str | None, kwargs: dict) -> httpx.Response:
        kwargs = {**kwargs, "headers": {**kwargs.get("headers", {}), **self.credentials.headers(token)}}
        return self.http(endpoint).request(method, endpoint.url + path, extensions=self.extensions(endpoint),
                                           **kwargs)

    def generate(self, prompt: str, *, image: bytes | None = None, media_type: str = "image/png", **params) -> bytes:
        """POST /generate: the image's bytes (``media_type`` png, jpeg or webp). ``image`` makes it
        image-to-image (with ``strength``); other params as the API: width, height, num_inference_steps,
        guidance_scale, seed, negative_prompt."""
        body = {"prompt": prompt, **params}
        if image is not None:
            body["image"] = base64.b64encode(image).decode()
        return self.request("POST", "/generate", json=body, headers={"Accept": media_type}).content

    def edit(self, image: bytes, prompt: str, *, size: str | None = None, output_format: str = "png",
             filename: str = "image.png", **params) -> bytes:
        """POST /v1/images/edits (OpenAI's multipart edit): the repainted image's bytes."""
        form = {"prompt": prompt, "response_format": "b64_json", "output_format": output_format,
                **({"size": size} if size else {}), **{k: str(v) for k, v in params.items()}}
        response = self.request("POST", "/v1/images/edits", data=form, files={"image": (filename, image)})
        return base64.b64decode(response.json()["data"][0]["b64_json"])

    def stream(self, config: dict, *, max_in_flight: int = 2, frame_timeout: float = 10.0,
               on_event: Callable[[Event], None] | None = None):
        """Open a frame stream (GET /v1/stream) that fails over between endpoints; see stream.StreamSession."""
        self._ensure_started()
        return StreamSession(self, config, max_in_flight=max_in_flight, frame_timeout=frame_timeout,
                             on_event=on_event or self.on_event).open()
