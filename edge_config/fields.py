"""Building blocks of the config models: the frozen base model and reusable field checks."""
from __future__ import annotations

import ipaddress
import re
from typing import Any, Iterable, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from edge_config.errors import FieldProblem, config_error


class Section(BaseModel):
    """Base of every config model: immutable, and an unknown key is an error (almost always a typo)."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=False)

    @classmethod
    def from_dict(cls, data: Any, path: str) -> Self:
        """Validate `data` as this section found at `path` (e.g. "edge.pipeline"); raises `ConfigError`."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise config_error(cls, exc, path) from None


def unique(values: Iterable[Any]) -> None:
    seen: list[Any] = []
    for i, value in enumerate(values):
        if value in seen:
            raise FieldProblem(f"duplicate value {value!r}", "list each value once", (i,))
        seen.append(value)


def ipv4_network(value: str, at: tuple[str | int, ...] = ()) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise FieldProblem(f"{value!r} is not a valid CIDR ({exc})",
                           "write the network address with its prefix, e.g. \"203.0.113.0/24\"", at) from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise FieldProblem(f"{value!r} is IPv6; the cluster is IPv4-only", "give an IPv4 CIDR", at)
    return net


def cidr_list(values: tuple[str, ...]) -> tuple[str, ...]:
    """Each entry a valid IPv4 CIDR, no duplicates, no two overlapping."""
    unique(values)
    nets = [ipv4_network(v, (i,)) for i, v in enumerate(values)]
    for i, net_a in enumerate(nets):
        for j in range(i + 1, len(nets)):
            if net_a.overlaps(nets[j]):
                raise FieldProblem(f"{nets[j]} overlaps {net_a} (entry {i})", "choose non-overlapping CIDR blocks",
                                   (j,))
    return values


_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def email_list(emails: tuple[str, ...]) -> tuple[str, ...]:
    """Unique addresses for SNS e-mail subscriptions; an item that is not one names its index."""
    unique(emails)
    for i, item in enumerate(emails):
        if not _EMAIL_RE.match(item):
            raise FieldProblem(f"{item!r} is not an e-mail address", "give an address like ops@example.com", (i,))
    return emails
