"""Device client for edge-diffusion: finds the nearest endpoint, pins the private CA, refreshes its bearer
token, and keeps a frame stream going across node drains.

It speaks only the HTTP/WebSocket contract (docs/streaming.md, "Device client"); it never imports the server.
"""
from edge_diffusion_client.client import EdgeClient
from edge_diffusion_client.credentials import Credentials
from edge_diffusion_client.endpoints import Endpoint
from edge_diffusion_client.errors import AuthError, EdgeError, NoEndpointError, PinMismatchError
from edge_diffusion_client.events import Event
from edge_diffusion_client.stream import Frame, StreamSession

__all__ = ["AuthError", "EdgeClient", "EdgeError", "Endpoint", "Event", "Frame", "Credentials", "NoEndpointError",
           "PinMismatchError", "StreamSession"]
