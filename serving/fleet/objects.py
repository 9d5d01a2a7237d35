"""Pure functions from Kubernetes objects (EndpointSlices, Nodes, Services) to the URLs an AR device can call.

The Service is a NodePort with ``externalTrafficPolicy: Local``, so a node answers on the NodePort only
while it hosts a ready serving pod. The inventory therefore lists exactly those nodes, with their public IP.
"""
from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_API_URL = "https://kubernetes.default.svc"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
ZONE_LABEL = "topology.kubernetes.io/zone"
# Set by this project's Karpenter NodePools (charts/nodepools.py) on every node they launch.
ACCELERATOR_LABEL = "edge-diffusion.aws/accelerator"
# Karpenter taints a node it is about to consolidate, drift-replace or expire; its pods are evicted soon.
KARPENTER_DISRUPTED_TAINT = "karpenter.sh/disrupted"

_NEURON_RESOURCES = ("aws.amazon.com/neuron", "aws.amazon.com/neuroncore", "aws.amazon.com/neurondevice")
_NEURON_FAMILIES = ("inf1", "inf2", "trn1", "trn1n", "trn2")


class InventoryError(RuntimeError):
    """The Kubernetes API could not be read; the message says what failed and how to fix it."""


def _positive_quantity(value: Any) -> bool:
    # Extended resources (GPUs, Neuron devices) are always integer quantities.
    try:
        return int(str(value)) > 0
    except ValueError:
        return False


def node_accelerator(node: dict) -> str:
    """``"nvidia"``, ``"neuron"`` or ``"cpu"`` from the node's labels and advertised resources."""
    labels = node.get("metadata", {}).get("labels") or {}
    status = node.get("status") or {}
    resources = {**(status.get("capacity") or {}), **(status.get("allocatable") or {})}

    # Labels come first: they exist as soon as Karpenter launches the node, before the device plugin
    # has registered the extended resource.
    if labels.get(ACCELERATOR_LABEL) in ("nvidia", "neuron"):
        return labels[ACCELERATOR_LABEL]
    if labels.get("karpenter.k8s.aws/instance-gpu-manufacturer", "").lower() == "nvidia":
        return "nvidia"
    if any(key == "nvidia.com/gpu" or key.startswith("nvidia.com/gpu.") for key in labels):
        return "nvidia"
    if "aws.amazon.com/neuron" in labels:
        return "neuron"
    family = labels.get("karpenter.k8s.aws/instance-family") or labels.get(
        "node.kubernetes.io/instance-type", ""
    ).split(".")[0]
    if family in _NEURON_FAMILIES:
        return "neuron"
    if _positive_quantity(resources.get("nvidia.com/gpu", 0)):
        return "nvidia"
    if any(_positive_quantity(resources.get(name, 0)) for name in _NEURON_RESOURCES):
        return "neuron"
    return "cpu"


def node_external_ip(node: dict) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    candidates = []
    for address in (node.get("status") or {}).get("addresses") or []:
        if address.get("type") != "ExternalIP":
            continue
        try:
            candidates.append(ipaddress.ip_address(address.get("address", "")))
        except ValueError:
            continue
    # Prefer IPv4: mobile carrier networks still reach it more reliably than IPv6.
    candidates.sort(key=lambda ip: ip.version)
    return candidates[0] if candidates else None


def _node_in_service(node: dict) -> bool:
    """False while the node is going away or unhealthy, even though its pod still reports ready."""
    metadata = node.get("metadata") or {}
    spec = node.get("spec") or {}
    if metadata.get("deletionTimestamp") or spec.get("unschedulable"):
        return False
    if any(taint.get("key") == KARPENTER_DISRUPTED_TAINT for taint in spec.get("taints") or []):
        return False
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _endpoint_serves(endpoint: dict) -> bool:
    conditions = endpoint.get("conditions") or {}
    # The API defines an absent "ready" as unknown, to be read as ready; terminating endpoints can still
    # claim ready when the Service publishes not-ready addresses, so they are excluded explicitly.
    return conditions.get("ready", True) is not False and conditions.get("terminating") is not True


def _url(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, node_port: int, scheme: str = "http") -> str:
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"{scheme}://{host}:{node_port}"


def node_dns_name(node_name: str, node_domain: str) -> str:
    """The per-node name external-dns publishes (its --fqdn-template `{{ .Name | replace "." "-" }}.<domain>`):
    one label per node, so one wildcard certificate for ``*.<domain>`` covers every node."""
    return f"{node_name.replace('.', '-')}.{node_domain}"


def stream_url(url: str) -> str:
    """The WebSocket frame stream of an endpoint: same host and port, ws:// for http://, wss:// for https://."""
    return "ws" + url.removeprefix("http") + "/v1/stream"


def webrtc_url(url: str) -> str:
    """The WebRTC signalling URL of an endpoint (WHIP-style POST of an SDP offer): same host and port."""
    return url + "/v1/webrtc"


def endpoints_from_objects(endpoint_slices: list[dict], nodes: list[dict], node_port: int,
                           scheme: str = "http", node_domain: str | None = None) -> list[dict]:
    """Turn a Service's EndpointSlices and the cluster's Nodes into ``[{url, stream_url, zone, accelerator, ready}]``.

    One item per node that hosts at least one ready, non-terminating endpoint. ``ready`` is False when that
    node is cordoned, being deleted or disrupted by Karpenter, or not Ready itself: it still answers, but a
    device should prefer another endpoint.
    """
    if isinstance(node_port, bool) or not isinstance(node_port, int) or not 1 <= node_port <= 65535:
        raise ValueError(f"node_port must be an integer port number (1-65535), got {node_port!r}")
    if scheme not in ("http", "https"):
        raise ValueError(f"scheme must be http or https, got {scheme!r}")

    nodes_by_name = {n.get("metadata", {}).get("name"): n for n in nodes}
    endpoint_zone: dict[str, str] = {}
    for endpoint_slice in endpoint_slices:
        for endpoint in endpoint_slice.get("endpoints") or []:
            node_name = endpoint.get("nodeName")
            if node_name and _endpoint_serves(endpoint):
                endpoint_zone.setdefault(node_name, endpoint.get("zone") or "")

    items = []
    for node_name, slice_zone in endpoint_zone.items():
        node = nodes_by_name.get(node_name)
        if node is None:
            # The node was deleted between the two API reads; its endpoints disappear on the next sync.
            continue
        ip = node_external_ip(node)
        if ip is None:
            # Devices reach the NodePort over the internet or a carrier network. A node with only a private
            # (InternalIP) address, e.g. in a private subnet, is unreachable for them, so listing it would
            # only send devices into a connection timeout.
            continue
        labels = node.get("metadata", {}).get("labels") or {}
        url = _url(ip, node_port, scheme)
        named = {}
        if node_domain:
            # Publicly trusted certificates name hosts, not IPs: the URL carries the node's DNS name.
            named = {"server_name": node_dns_name(node_name, node_domain)}
            url = f"{scheme}://{named['server_name']}:{node_port}"
        items.append(
            {
                **named,
                "url": url,
                "stream_url": stream_url(url),
                "webrtc_url": webrtc_url(url),
                "zone": labels.get(ZONE_LABEL) or slice_zone or None,
                "accelerator": node_accelerator(node),
                "ready": _node_in_service(node),
                "_ip": ip,
            }
        )

    items.sort(key=lambda item: (item["zone"] or "", item["accelerator"], item["_ip"].version, item["_ip"]))
    for item in items:
        del item["_ip"]
    return items


def node_port_from_service(service: dict, port_name: str | None = None) -> int:
    """The nodePort of a Service: the named port, or its only port with a nodePort."""
    name = service.get("metadata", {}).get("name", "<unnamed>")
    ports = [p for p in (service.get("spec") or {}).get("ports") or [] if p.get("nodePort")]
    if port_name is not None:
        ports = [p for p in ports if p.get("name") == port_name]
    if len(ports) != 1:
        wanted = f"a port named {port_name!r}" if port_name else "exactly one port"
        raise InventoryError(
            f"Service {name!r} must have {wanted} with a nodePort (found {len(ports)}); "
            "make it type NodePort or pass node_port explicitly"
        )
    return int(ports[0]["nodePort"])
