"""AWS clients for the configured region: read-only calls, short timeouts, few retries (a preflight that hangs on
an unreachable endpoint helps nobody)."""
from __future__ import annotations

from typing import Callable

from botocore.client import BaseClient
from botocore.config import Config

Clients = Callable[[str], BaseClient]

CLIENT_CONFIG = Config(connect_timeout=5, read_timeout=20, retries={"mode": "standard", "max_attempts": 3})


def client_factory(region: str) -> Clients:
    """One boto3 client per service, created on first use, all in `region` with the default credential chain."""
    import boto3

    session = boto3.Session(region_name=region)
    made: dict[str, BaseClient] = {}

    def client(service: str) -> BaseClient:
        if service not in made:
            made[service] = session.client(service, config=CLIENT_CONFIG)
        return made[service]

    return client
