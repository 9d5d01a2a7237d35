"""Endpoint inventory: EndpointSlices + Nodes (shaped exactly as the API server returns them) -> device list."""
from __future__ import annotations

import asyncio
import copy
import json
import time
import zlib

import httpx
import pytest

from serving.fleet import inventory
from serving.fleet.inventory import KubernetesInventory
from serving.fleet.objects import InventoryError, endpoints_from_objects, node_accelerator, node_port_from_service

NAMESPACE = "edge-diffusion"
SERVICE = "edge-diffusion"
NODE_PORT = 30080

_CONDITIONS_OK = [
    {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory",
     "message": "kubelet has sufficient memory available"},
    {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure",
     "message": "kubelet has no disk pressure"},
    {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID",
     "message": "kubelet has sufficient PID available"},
    {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"},
]


def make_node(
    name: str,
    *,
    zone: str,
    zone_id: str,
    instance_type: str,
    internal_ip: str,
    external_ip: str | None,
    nodepool: str,
    gpu_manufacturer: str | None = None,
    extended: dict[str, str] | None = None,
    extra_labels: dict[str, str] | None = None,
    taints: list[dict] | None = None,
    unschedulable: bool = False,
) -> dict:
    """A Node as `kubectl get node -o json` prints it for a Karpenter-launched EKS node."""
    family, size = instance_type.split(".")
    zone_type = "local-zone" if "-lax-" in zone else "region"
    labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/instance-type": instance_type,
        "beta.kubernetes.io/os": "linux",
        "failure-domain.beta.kubernetes.io/region": "us-west-2",
        "failure-domain.beta.kubernetes.io/zone": zone,
        "k8s.io/cloud-provider-aws": "2ab3f1a7c0f9e4d8b6a5c4e3d2f1a0b9",
        "karpenter.k8s.aws/ec2nodeclass": nodepool,
        "karpenter.k8s.aws/instance-category": family[0],
        "karpenter.k8s.aws/instance-cpu": "4",
        "karpenter.k8s.aws/instance-family": family,
        "karpenter.k8s.aws/instance-generation": "".join(c for c in family if c.isdigit()),
        "karpenter.k8s.aws/instance-hypervisor": "nitro",
        "karpenter.k8s.aws/instance-memory": "16384",
        "karpenter.k8s.aws/instance-size": size,
        "karpenter.sh/capacity-type": "on-demand",
        **({"edge-diffusion.aws/accelerator": nodepool, "edge-diffusion.aws/zone-type": zone_type}
           if nodepool in ("nvidia", "neuron") else {}),
        "karpenter.sh/initialized": "true",
        "karpenter.sh/nodepool": nodepool,
        "karpenter.sh/registered": "true",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": instance_type,
        "topology.k8s.aws/zone-id": zone_id,
        "topology.kubernetes.io/region": "us-west-2",
        "topology.kubernetes.io/zone": zone,
        **(extra_labels or {}),
    }
    if gpu_manufacturer:
        labels["karpenter.k8s.aws/instance-gpu-manufacturer"] = gpu_manufacturer
        labels["karpenter.k8s.aws/instance-gpu-count"] = "1"
    resources = {
        "cpu": "4",
        "ephemeral-storage": "104845292Ki",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "memory": "15896988Ki",
        "pods": "29",
        **(extended or {}),
    }
    addresses = [{"type": "InternalIP", "address": internal_ip}]
    if external_ip:
        addresses.append({"type": "ExternalIP", "address": external_ip})
    addresses += [
        {"type": "InternalDNS", "address": name},
        {"type": "Hostname", "address": name},
    ]
    spec: dict = {"providerID": f"aws:///{zone}/i-0{zlib.crc32(name.encode()):016x}"}
    if taints:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "annotations": {
                "alpha.kubernetes.io/provided-node-ip": internal_ip,
                "karpenter.k8s.aws/ec2nodeclass-hash": "8120918563479475735",
                "karpenter.sh/nodepool-hash": "4012513481623584108",
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
            "creationTimestamp": "2026-11-24T21:14:07Z",
            "finalizers": ["karpenter.sh/termination"],
            "labels": labels,
            "name": name,
            "ownerReferences": [{
                "apiVersion": "karpenter.sh/v1", "blockOwnerDeletion": True, "kind": "NodeClaim",
                "name": f"{nodepool}-x7k2p", "uid": "5b0c8f5e-51c1-4f36-9b1e-3f0f1d2a7c11",
            }],
            "resourceVersion": "1843392",
            "uid": "d0e5c7a2-7c51-4b8e-a1d2-0f3e9b6c4a10",
        },
        "spec": spec,
        "status": {
            "addresses": addresses,
            "allocatable": resources,
            "capacity": resources,
            "conditions": [
                {**c, "lastHeartbeatTime": "2026-11-25T01:40:12Z", "lastTransitionTime": "2026-11-24T21:14:40Z"}
                for c in _CONDITIONS_OK
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": "8e0d1f2a-3b4c-4d5e-8f6a-7b8c9d0e1f2a",
                "containerRuntimeVersion": "containerd://2.1.4",
                "kernelVersion": "6.12.46-66.121.amzn2023.x86_64",
                "kubeProxyVersion": "",
                "kubeletVersion": "v1.35.0-eks-3025e55",
                "machineID": "ec2b7e1f0d3a4c5b8e9f0a1b2c3d4e5f",
                "operatingSystem": "linux",
                "osImage": "Amazon Linux 2023.9.20251117",
                "systemUUID": "ec2b7e1f-0d3a-4c5b-8e9f-0a1b2c3d4e5f",
            },
            "runtimeHandlers": [{"features": {"recursiveReadOnlyMounts": True, "userNamespaces": True},
                                 "name": "runc"}],
        },
    }


def make_endpoint(pod: str, ip: str, node: str, zone: str, *, ready, serving=True, terminating=False) -> dict:
    conditions = {"serving": serving, "terminating": terminating}
    if ready is not None:
        conditions["ready"] = ready
    return {
        "addresses": [ip],
        "conditions": conditions,
        "nodeName": node,
        "targetRef": {"kind": "Pod", "name": pod, "namespace": NAMESPACE,
                      "uid": f"7f1c{zlib.crc32(pod.encode()):08x}-2b1e-4c8a-9d3e-5a6b7c8d9e0f"},
        "zone": zone,
    }


def make_slice(name: str, endpoints: list[dict] | None) -> dict:
    """An EndpointSlice as the endpointslice controller writes it for the NodePort Service."""
    return {
        "addressType": "IPv4",
        "apiVersion": "discovery.k8s.io/v1",
        "endpoints": endpoints,
        "kind": "EndpointSlice",
        "metadata": {
            "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2026-11-25T01:39:58Z"},
            "creationTimestamp": "2026-11-24T21:20:31Z",
            "generateName": f"{SERVICE}-",
            "generation": 42,
            "labels": {
                "app.kubernetes.io/name": "edge-diffusion",
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                "kubernetes.io/service-name": SERVICE,
            },
            "name": name,
            "namespace": NAMESPACE,
            "ownerReferences": [{
                "apiVersion": "v1", "blockOwnerDeletion": True, "controller": True, "kind": "Service",
                "name": SERVICE, "uid": "c3a9e7d1-1f2b-4c3d-8e4f-5a6b7c8d9e0a",
            }],
            "resourceVersion": "1843510",
            "uid": "e4b0f8e2-2a3c-4d4e-9f5a-6b7c8d9e0f1b",
        },
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


LAX_A, LAX_B, REGION_A = "us-west-2-lax-1a", "us-west-2-lax-1b", "us-west-2a"


@pytest.fixture
def nodes() -> list[dict]:
    gpu = {"nvidia.com/gpu": "1"}
    return [
        # Two ready pods on one g4dn node: listed once.
        make_node("ip-10-0-64-11.us-west-2.compute.internal", zone=LAX_A, zone_id="usw2-lax1-az1",
                  instance_type="g4dn.xlarge", internal_ip="10.0.64.11", external_ip="198.51.100.10",
                  nodepool="nvidia", gpu_manufacturer="nvidia", extended=gpu),
        # Only a not-ready (still loading) pod: not listed.
        make_node("ip-10-0-64-12.us-west-2.compute.internal", zone=LAX_A, zone_id="usw2-lax1-az1",
                  instance_type="g4dn.xlarge", internal_ip="10.0.64.12", external_ip="198.51.100.11",
                  nodepool="nvidia", gpu_manufacturer="nvidia", extended=gpu),
        make_node("ip-10-0-80-21.us-west-2.compute.internal", zone=LAX_B, zone_id="usw2-lax1-az2",
                  instance_type="g5.xlarge", internal_ip="10.0.80.21", external_ip="198.51.100.20",
                  nodepool="nvidia", gpu_manufacturer="nvidia", extended=gpu),
        # Only a terminating pod (scale-down in progress): not listed.
        make_node("ip-10-0-80-22.us-west-2.compute.internal", zone=LAX_B, zone_id="usw2-lax1-az2",
                  instance_type="g5.xlarge", internal_ip="10.0.80.22", external_ip="198.51.100.21",
                  nodepool="nvidia", gpu_manufacturer="nvidia", extended=gpu),
        # Ready pod, but no public address (private subnet): unreachable for devices, not listed.
        make_node("ip-10-0-81-9.us-west-2.compute.internal", zone=LAX_B, zone_id="usw2-lax1-az2",
                  instance_type="g5.xlarge", internal_ip="10.0.81.9", external_ip=None,
                  nodepool="nvidia", gpu_manufacturer="nvidia", extended=gpu),
        # inf2 lives in the parent region; the Neuron device plugin advertises its resources.
        make_node("ip-10-0-1-45.us-west-2.compute.internal", zone=REGION_A, zone_id="usw2-az1",
                  instance_type="inf2.xlarge", internal_ip="10.0.1.45", external_ip="203.0.113.7",
                  nodepool="neuron",
                  extended={"aws.amazon.com/neuron": "1", "aws.amazon.com/neuroncore": "2",
                            "aws.amazon.com/neurondevice": "1"}),
        # Karpenter is consolidating this node: the pod still serves, but devices should move on.
        make_node("ip-10-0-64-30.us-west-2.compute.internal", zone=LAX_A, zone_id="usw2-lax1-az1",
                  instance_type="g4dn.xlarge", internal_ip="10.0.64.30", external_ip="198.51.100.30",
                  nodepool="nvidia", gpu_manufacturer="nvidia", extended=gpu,
                  taints=[{"effect": "NoSchedule", "key": "karpenter.sh/disrupted"},
                          {"effect": "NoSchedule", "key": "nvidia.com/gpu", "value": "true"}]),
        # A system node without serving pods.
        make_node("ip-10-0-64-99.us-west-2.compute.internal", zone=LAX_A, zone_id="usw2-lax1-az1",
                  instance_type="m6i.xlarge", internal_ip="10.0.64.99", external_ip="198.51.100.99",
                  nodepool="system"),
    ]


@pytest.fixture
def endpoint_slices() -> list[dict]:
    node = "ip-10-0-{}.us-west-2.compute.internal".format
    return [
        make_slice("edge-diffusion-7xq2m", [
            make_endpoint("edge-diffusion-nvidia-6d9f7c8b5-abcde", "10.0.64.201", node("64-11"), LAX_A, ready=True),
            make_endpoint("edge-diffusion-nvidia-6d9f7c8b5-fghij", "10.0.64.202", node("64-11"), LAX_A, ready=True),
            make_endpoint("edge-diffusion-nvidia-6d9f7c8b5-klmno", "10.0.64.203", node("64-12"), LAX_A,
                          ready=False, serving=False),
            make_endpoint("edge-diffusion-nvidia-6d9f7c8b5-pqrst", "10.0.80.201", node("80-21"), LAX_B, ready=True),
            make_endpoint("edge-diffusion-nvidia-6d9f7c8b5-uvwxy", "10.0.80.202", node("80-22"), LAX_B,
                          ready=False, serving=True, terminating=True),
        ]),
        make_slice("edge-diffusion-k9w4t", [
            make_endpoint("edge-diffusion-nvidia-6d9f7c8b5-zzzzz", "10.0.81.201", node("81-9"), LAX_B, ready=True),
            make_endpoint("edge-diffusion-neuron-5c4b3a297-aaaaa", "10.0.1.201", node("1-45"), REGION_A, ready=True),
            make_endpoint("edge-diffusion-nvidia-6d9f7c8b5-bbbbb", "10.0.64.231", node("64-30"), LAX_A, ready=True),
        ]),
        # The controller keeps an empty slice around after a scale to zero; the API returns endpoints: null.
        make_slice("edge-diffusion-empty", None),
    ]


def test_lists_one_url_per_node_with_a_ready_endpoint(endpoint_slices, nodes):
    assert endpoints_from_objects(endpoint_slices, nodes, NODE_PORT) == [
        {"url": "http://198.51.100.10:30080", "stream_url": "ws://198.51.100.10:30080/v1/stream", "webrtc_url": "http://198.51.100.10:30080/v1/webrtc", "zone": LAX_A, "accelerator": "nvidia", "ready": True},
        {"url": "http://198.51.100.30:30080", "stream_url": "ws://198.51.100.30:30080/v1/stream", "webrtc_url": "http://198.51.100.30:30080/v1/webrtc", "zone": LAX_A, "accelerator": "nvidia", "ready": False},
        {"url": "http://198.51.100.20:30080", "stream_url": "ws://198.51.100.20:30080/v1/stream", "webrtc_url": "http://198.51.100.20:30080/v1/webrtc", "zone": LAX_B, "accelerator": "nvidia", "ready": True},
        {"url": "http://203.0.113.7:30080", "stream_url": "ws://203.0.113.7:30080/v1/stream", "webrtc_url": "http://203.0.113.7:30080/v1/webrtc", "zone": REGION_A, "accelerator": "neuron", "ready": True},
    ]


def test_order_is_independent_of_api_order(endpoint_slices, nodes):
    expected = endpoints_from_objects(endpoint_slices, nodes, NODE_PORT)
    shuffled_slices = [dict(s, endpoints=list(reversed(s["endpoints"] or []))) for s in reversed(endpoint_slices)]
    assert endpoints_from_objects(shuffled_slices, list(reversed(nodes)), NODE_PORT) == expected


def test_ip_ordering_is_numeric_not_lexical(nodes):
    first, second = copy.deepcopy(nodes[0]), copy.deepcopy(nodes[0])
    second["metadata"]["name"] = "other"
    first["status"]["addresses"][1]["address"] = "198.51.100.10"
    second["status"]["addresses"][1]["address"] = "198.51.100.9"
    slices = [make_slice("s", [make_endpoint("a", "10.0.0.1", first["metadata"]["name"], LAX_A, ready=True),
                               make_endpoint("b", "10.0.0.2", "other", LAX_A, ready=True)])]
    urls = [e["url"] for e in endpoints_from_objects(slices, [first, second], NODE_PORT)]
    assert urls == ["http://198.51.100.9:30080", "http://198.51.100.10:30080"]


def test_unknown_ready_condition_counts_as_ready(nodes):
    # discovery.k8s.io/v1: a nil "ready" is an unknown state that consumers should read as ready.
    slices = [make_slice("s", [make_endpoint("p", "10.0.64.201", nodes[0]["metadata"]["name"], LAX_A, ready=None)])]
    assert [e["url"] for e in endpoints_from_objects(slices, nodes, NODE_PORT)] == ["http://198.51.100.10:30080"]


def test_terminating_endpoint_is_excluded_even_when_it_claims_ready(nodes):
    # With publishNotReadyAddresses a terminating endpoint keeps ready=true; it is still going away.
    slices = [make_slice("s", [make_endpoint("p", "10.0.64.201", nodes[0]["metadata"]["name"], LAX_A,
                                             ready=True, terminating=True)])]
    assert endpoints_from_objects(slices, nodes, NODE_PORT) == []


def test_endpoint_without_node_name_or_vanished_node_is_skipped(nodes):
    endpoint = make_endpoint("p", "10.0.64.201", "ip-10-0-9-9.us-west-2.compute.internal", LAX_A, ready=True)
    orphan = make_endpoint("q", "10.0.64.202", "x", LAX_A, ready=True)
    del orphan["nodeName"]
    assert endpoints_from_objects([make_slice("s", [endpoint, orphan])], nodes, NODE_PORT) == []


def test_ipv6_external_ip_is_bracketed_and_ipv4_preferred(nodes):
    node = copy.deepcopy(nodes[0])
    node["status"]["addresses"] = [{"type": "ExternalIP", "address": "2001:db8::10"},
                                   {"type": "InternalIP", "address": "10.0.64.11"}]
    slices = [make_slice("s", [make_endpoint("p", "10.0.64.201", node["metadata"]["name"], LAX_A, ready=True)])]
    assert endpoints_from_objects(slices, [node], NODE_PORT)[0]["url"] == "http://[2001:db8::10]:30080"
    assert endpoints_from_objects(slices, [node], NODE_PORT)[0]["stream_url"] == "ws://[2001:db8::10]:30080/v1/stream"
    node["status"]["addresses"].append({"type": "ExternalIP", "address": "198.51.100.10"})
    assert endpoints_from_objects(slices, [node], NODE_PORT)[0]["url"] == "http://198.51.100.10:30080"


def test_node_readiness_and_cordon_set_ready_false(nodes):
    node = copy.deepcopy(nodes[0])
    slices = [make_slice("s", [make_endpoint("p", "10.0.64.201", node["metadata"]["name"], LAX_A, ready=True)])]
    node["spec"]["unschedulable"] = True
    assert endpoints_from_objects(slices, [node], NODE_PORT)[0]["ready"] is False
    node = copy.deepcopy(nodes[0])
    node["status"]["conditions"][-1].update(status="Unknown", reason="NodeStatusUnknown")
    assert endpoints_from_objects(slices, [node], NODE_PORT)[0]["ready"] is False
    node = copy.deepcopy(nodes[0])
    node["metadata"]["deletionTimestamp"] = "2026-11-25T01:41:00Z"
    assert endpoints_from_objects(slices, [node], NODE_PORT)[0]["ready"] is False


def test_zone_falls_back_to_endpoint_zone(nodes):
    node = copy.deepcopy(nodes[0])
    del node["metadata"]["labels"]["topology.kubernetes.io/zone"]
    slices = [make_slice("s", [make_endpoint("p", "10.0.64.201", node["metadata"]["name"], LAX_B, ready=True)])]
    assert endpoints_from_objects(slices, [node], NODE_PORT)[0]["zone"] == LAX_B


@pytest.mark.parametrize("node_port", [0, 70000, "30080", True, None])
def test_bad_node_port_is_rejected(node_port):
    with pytest.raises(ValueError, match="node_port"):
        endpoints_from_objects([], [], node_port)


def _bare_node(labels=None, capacity=None):
    return {"metadata": {"name": "n", "labels": labels or {}}, "status": {"capacity": capacity or {}}}


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        (_bare_node({"edge-diffusion.aws/accelerator": "neuron"}), "neuron"),
        (_bare_node({"edge-diffusion.aws/accelerator": "nvidia"}), "nvidia"),
        (_bare_node({"karpenter.k8s.aws/instance-gpu-manufacturer": "nvidia"}), "nvidia"),
        (_bare_node({"nvidia.com/gpu.present": "true"}), "nvidia"),
        (_bare_node({"nvidia.com/gpu": "true"}), "nvidia"),
        (_bare_node(capacity={"nvidia.com/gpu": "4"}), "nvidia"),
        (_bare_node({"aws.amazon.com/neuron": "true"}), "neuron"),
        (_bare_node({"karpenter.k8s.aws/instance-family": "inf2"}), "neuron"),
        (_bare_node({"node.kubernetes.io/instance-type": "inf2.8xlarge"}), "neuron"),
        (_bare_node(capacity={"aws.amazon.com/neuroncore": "2"}), "neuron"),
        (_bare_node({"karpenter.k8s.aws/instance-family": "c7i"}, {"nvidia.com/gpu": "0"}), "cpu"),
        (_bare_node({"node.kubernetes.io/instance-type": "m6i.large"}), "cpu"),
    ],
)
def test_node_accelerator(node, expected):
    assert node_accelerator(node) == expected


def _service(ports):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": SERVICE, "namespace": NAMESPACE},
            "spec": {"type": "NodePort", "externalTrafficPolicy": "Local", "ports": ports}}


def test_node_port_from_service():
    http = {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080}
    assert node_port_from_service(_service([http])) == 30080
    other = {"name": "grpc", "port": 81, "protocol": "TCP", "targetPort": 8081, "nodePort": 30081}
    assert node_port_from_service(_service([http, other]), port_name="http") == 30080
    with pytest.raises(InventoryError, match="exactly one port"):
        node_port_from_service(_service([http, other]))
    with pytest.raises(InventoryError, match="nodePort"):
        node_port_from_service(_service([{"name": "http", "port": 80, "targetPort": 8080}]))


# --- KubernetesInventory against a fake API server -------------------------------------------------


@pytest.fixture
def service_account(tmp_path):
    (tmp_path / "token").write_text("token-1\n")
    (tmp_path / "namespace").write_text(NAMESPACE)
    return tmp_path


class FakeApiServer:
    """Answers the three reads the inventory makes, paginating EndpointSlices like the real server."""

    def __init__(self, endpoint_slices, nodes, service):
        self.endpoint_slices, self.nodes, self.service = endpoint_slices, nodes, service
        self.requests: list[httpx.Request] = []
        self.fail_with: int | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.fail_with:
            return httpx.Response(self.fail_with, json={
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Forbidden",
                "message": 'nodes is forbidden: User "system:serviceaccount:edge-diffusion:edge-diffusion" '
                           'cannot list resource "nodes" in API group "" at the cluster scope',
                "details": {"kind": "nodes"}, "code": self.fail_with})
        path, params = request.url.path, request.url.params
        if path == f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices":
            assert params["labelSelector"] == f"kubernetes.io/service-name={SERVICE}"
            start = int(params.get("continue") or 0)
            page = self.endpoint_slices[start:start + 1]
            more = start + 1 < len(self.endpoint_slices)
            return httpx.Response(200, json={
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList", "items": page,
                "metadata": {"resourceVersion": "1843600", **({"continue": str(start + 1)} if more else {})}})
        if path == "/api/v1/nodes":
            return httpx.Response(200, json={"apiVersion": "v1", "kind": "NodeList", "items": self.nodes,
                                             "metadata": {"resourceVersion": "1843601"}})
        if path == f"/api/v1/namespaces/{NAMESPACE}/services/{SERVICE}":
            return httpx.Response(200, json=self.service)
        return httpx.Response(404, json={"kind": "Status", "message": f"{path} not found", "code": 404})


@pytest.fixture
def api(endpoint_slices, nodes):
    service = _service([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30123}])
    return FakeApiServer(endpoint_slices, nodes, service)


def test_kubernetes_inventory_reads_the_api(api, service_account, endpoint_slices, nodes):
    async def scenario():
        inv = KubernetesInventory(SERVICE, None, None, service_account_dir=service_account,
                                  transport=httpx.MockTransport(api))
        try:
            return await inv.list_endpoints()
        finally:
            await inv.aclose()

    result = asyncio.run(scenario())
    assert result == endpoints_from_objects(endpoint_slices, nodes, 30123)
    assert len(result) == 4
    assert all(r.url.scheme == "https" and r.url.host == "kubernetes.default.svc" for r in api.requests)
    assert {r.headers["Authorization"] for r in api.requests} == {"Bearer token-1"}
    slice_pages = [r for r in api.requests if r.url.path.endswith("/endpointslices")]
    assert len(slice_pages) == len(endpoint_slices)  # followed every continue token


def test_kubernetes_inventory_caches_bursts_and_refreshes(api, service_account, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(inventory.time, "monotonic", lambda: clock[0])

    async def scenario():
        inv = KubernetesInventory(SERVICE, NAMESPACE, NODE_PORT, service_account_dir=service_account,
                                  cache_ttl=5.0, transport=httpx.MockTransport(api))
        burst = await asyncio.gather(*(inv.list_endpoints() for _ in range(20)))
        after_burst = len(api.requests)
        clock[0] += 4.9
        await inv.list_endpoints()
        cached = len(api.requests)
        (service_account / "token").write_text("token-2")  # kubelet rotated the projected token
        clock[0] += 0.2
        await inv.list_endpoints()
        await inv.aclose()
        return burst, after_burst, cached

    burst, after_burst, cached = asyncio.run(scenario())
    assert all(b == burst[0] for b in burst) and burst[0][0]["url"].endswith(f":{NODE_PORT}")
    pages = len(api.endpoint_slices) + 1  # endpointslice pages + one node list; the port was given
    assert after_burst == pages
    assert cached == pages
    assert len(api.requests) == 2 * pages
    assert api.requests[-1].headers["Authorization"] == "Bearer token-2"
    assert not any("/services/" in r.url.path for r in api.requests)


def test_kubernetes_inventory_cached_result_is_not_shared_mutable(api, service_account):
    async def scenario():
        inv = KubernetesInventory(SERVICE, NAMESPACE, NODE_PORT, service_account_dir=service_account,
                                  transport=httpx.MockTransport(api))
        first = await inv.list_endpoints()
        first[0]["url"] = "http://evil"
        return await inv.list_endpoints()

    assert asyncio.run(scenario())[0]["url"] != "http://evil"


def test_kubernetes_inventory_api_error_is_clear(api, service_account):
    api.fail_with = 403

    async def scenario():
        inv = KubernetesInventory(SERVICE, NAMESPACE, NODE_PORT, service_account_dir=service_account,
                                  transport=httpx.MockTransport(api))
        await inv.list_endpoints()

    with pytest.raises(InventoryError, match=r"returned 403: nodes is forbidden.*Role"):
        asyncio.run(scenario())


def test_kubernetes_inventory_unreachable_api_is_clear(service_account):
    def refuse(request):
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    async def scenario():
        inv = KubernetesInventory(SERVICE, NAMESPACE, NODE_PORT, service_account_dir=service_account,
                                  transport=httpx.MockTransport(refuse))
        await inv.list_endpoints()

    with pytest.raises(InventoryError, match="endpointslices failed: ConnectError"):
        asyncio.run(scenario())


def test_kubernetes_inventory_outside_a_pod_is_clear(tmp_path):
    with pytest.raises(InventoryError, match="--inventory-namespace"):
        KubernetesInventory(SERVICE, None, NODE_PORT, service_account_dir=tmp_path)

    inv = KubernetesInventory(SERVICE, NAMESPACE, NODE_PORT, service_account_dir=tmp_path)
    with pytest.raises(InventoryError, match="cluster CA"):
        asyncio.run(inv.list_endpoints())

    inv = KubernetesInventory(SERVICE, NAMESPACE, NODE_PORT, service_account_dir=tmp_path,
                              transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    with pytest.raises(InventoryError, match="automountServiceAccountToken"):
        asyncio.run(inv.list_endpoints())


def test_kubernetes_inventory_validates_arguments(service_account):
    with pytest.raises(ValueError, match="service"):
        KubernetesInventory("", NAMESPACE, NODE_PORT, service_account_dir=service_account)
    with pytest.raises(ValueError, match="node_port"):
        KubernetesInventory(SERVICE, NAMESPACE, 99999, service_account_dir=service_account)



def test_served_through_get_v1_endpoints(api, service_account, cpu_backend):
    """The server's GET /v1/endpoints with the real inventory behind it (fake API server, real app)."""
    from fastapi.testclient import TestClient

    from serving.api.app import create_app
    from tests.serving.conftest import make_state

    state = make_state(cpu_backend, api_key="k")
    state.inventory = KubernetesInventory(SERVICE, NAMESPACE, NODE_PORT, service_account_dir=service_account,
                                          cache_ttl=0, transport=httpx.MockTransport(api))
    with TestClient(create_app(state)) as client:
        assert client.get("/v1/endpoints").status_code == 401
        response = client.get("/v1/endpoints", headers={"Authorization": "Bearer k"})
        assert response.status_code == 200, response.text
        assert response.json() == endpoints_from_objects(api.endpoint_slices, api.nodes, NODE_PORT)
        api.fail_with = 403
        # The last good list, marked stale, while the API fails...
        response = client.get("/v1/endpoints", headers={"Authorization": "Bearer k"})
        assert response.status_code == 200 and all(e["stale"] for e in response.json())
        # ...and 503 when there has never been one.
        state.inventory = KubernetesInventory(SERVICE, NAMESPACE, NODE_PORT, service_account_dir=service_account,
                                              cache_ttl=0, transport=httpx.MockTransport(api))
    with TestClient(create_app(state)) as client:
        response = client.get("/v1/endpoints", headers={"Authorization": "Bearer k"})
        assert response.status_code == 503 and response.headers["Retry-After"]
        # The API server's message (which names the service account) stays in the server log, not the answer.
        assert "serviceaccount" not in response.text


# -- control-plane outage: the last good list, one refresh at a time --------------------------------------------
def test_outage_serves_the_last_good_list_marked_stale_without_waiting_per_caller(api, service_account):
    hang = asyncio.Event()

    async def handler(request):
        if hang.is_set():
            await asyncio.sleep(30)  # the link to the region is down: the API never answers
        return api(request)

    async def scenario():
        inv = KubernetesInventory(SERVICE, NAMESPACE, NODE_PORT, service_account_dir=service_account, cache_ttl=0.05,
                                  stale_wait=0.2, transport=httpx.MockTransport(handler))
        fresh = await inv.list_endpoints()
        await asyncio.sleep(0.06)
        hang.set()
        calls_before = len(api.requests)
        started = time.monotonic()
        burst = await asyncio.gather(*(inv.list_endpoints() for _ in range(10)))
        elapsed = time.monotonic() - started
        refreshes = len(api.requests) - calls_before
        await asyncio.sleep(0.3)
        again = await inv.list_endpoints()  # the refresh is still hanging: no second one starts
        refreshes_after = len(api.requests) - calls_before
        await inv.aclose()
        return fresh, burst, elapsed, refreshes, again, refreshes_after

    fresh, burst, elapsed, refreshes, again, refreshes_after = asyncio.run(scenario())
    assert elapsed < 1.0  # one bounded wait for the whole burst, not N x the API timeout
    assert refreshes <= 2 and refreshes_after == refreshes  # one refresh in flight (its parallel reads)
    for answer in (*burst, again):
        assert [e["url"] for e in answer] == [e["url"] for e in fresh]
        assert all(e["stale"] is True and e["age_s"] >= 0.05 for e in answer)
    assert all("stale" not in e for e in fresh)


def test_failed_refresh_serves_stale_and_no_cache_is_an_error(api, service_account):
    async def scenario():
        inv = KubernetesInventory(SERVICE, NAMESPACE, NODE_PORT, service_account_dir=service_account, cache_ttl=0,
                                  transport=httpx.MockTransport(api))
        await inv.list_endpoints()
        api.fail_with = 500
        stale = await inv.list_endpoints()
        await inv.aclose()
        fresh_inv = KubernetesInventory(SERVICE, NAMESPACE, NODE_PORT, service_account_dir=service_account,
                                        transport=httpx.MockTransport(api))
        with pytest.raises(InventoryError):
            await fresh_inv.list_endpoints()
        return stale

    assert all(e["stale"] for e in asyncio.run(scenario()))


def test_inventory_without_namespace_outside_a_pod_exits_2_with_a_message(tmp_path):
    import subprocess
    import sys

    from tests.serving.conftest import REPO_ROOT

    result = subprocess.run(
        [sys.executable, "-m", "serving", "serve", "--model", str(tmp_path), "--inventory-service", "edge-diffusion"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), "HOME": str(tmp_path)})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    (line,) = [json.loads(x) for x in result.stderr.splitlines() if "configuration error" in x]
    assert "--inventory-namespace" in line["msg"] and line["level"] == "error"
