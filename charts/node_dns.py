"""external-dns for edge.tls.mode "acme": one A record per Local Zone serving node, `<node>.<node_domain>`.

Publicly trusted certificates name hosts, and a device reaches a node by its public IP: external-dns's node
source turns each node's ExternalIP into a record in the one Route 53 zone (credentials: Pod Identity, scoped in
edge_constructs/node_dns.py), and one wildcard certificate covers every name. A plain Deployment: a single
container configured by flags, with no CRDs, so every object here is rendered and schema-checked offline.
"""
from __future__ import annotations

from collections.abc import Sequence

import cdk8s
import cdk8s_plus_35 as kplus
from cdk8s import Duration, JsonPatch, Size
from cdk8s_plus_35 import k8s
from constructs import Construct

import versions
from charts.nodepools import ACCELERATOR_LABEL
from charts.security import restricted_container
from edge_config import AcmeConfig

NAMESPACE = "external-dns"
SERVICE_ACCOUNT = "external-dns"
RUN_AS_UID = 65534
HEALTH_PORT = 7979
LABELS = {"app.kubernetes.io/name": "external-dns", "app.kubernetes.io/part-of": "edge-diffusion"}
_PSS = {f"pod-security.kubernetes.io/{mode}{suffix}": value
        for mode in ("enforce", "audit", "warn") for suffix, value in (("", "restricted"), ("-version", "latest"))}


def fqdn_template(node_domain: str) -> str:
    """Dots in node names become dashes: one DNS label per node, covered by the wildcard `*.<node_domain>`
    (serving.fleet.objects.node_dns_name computes the same name for /v1/endpoints)."""
    return '{{ .Name | replace "." "-" }}.' + node_domain


def external_dns_args(acme: AcmeConfig, *, local_zones: Sequence[str], owner_id: str) -> list[str]:
    return [
        "--source=node",
        # Only accelerator nodes in the Local Zones: the ones devices reach on their public IP. (Region nodes
        # have no ExternalIP and would be published with a private address.)
        f"--label-filter={ACCELERATOR_LABEL},topology.kubernetes.io/zone in ({','.join(local_zones)})",
        f"--fqdn-template={fqdn_template(acme.node_domain)}",
        "--provider=aws",
        "--aws-zone-type=public",
        f"--zone-id-filter={acme.hosted_zone_id}",
        f"--domain-filter={acme.node_domain}",
        # Ownership TXT records: this cluster never touches records it did not create, and removes its own when
        # a node goes away (sync).
        "--registry=txt",
        f"--txt-owner-id={owner_id}",
        "--policy=sync",
        "--interval=1m",
    ]


class NodeDnsChart(cdk8s.Chart):
    def __init__(self, scope: Construct, construct_id: str, *, acme: AcmeConfig, local_zones: Sequence[str],
                 owner_id: str, region: str, node_selector: dict[str, str]) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        kplus.Namespace(self, "namespace", metadata=cdk8s.ApiObjectMetadata(name=NAMESPACE, labels={**LABELS, **_PSS}))
        service_account = kplus.ServiceAccount(
            self, "service-account", automount_token=True,
            metadata=cdk8s.ApiObjectMetadata(name=SERVICE_ACCOUNT, namespace=NAMESPACE, labels=LABELS))
        role = kplus.ClusterRole(self, "cluster-role", metadata=cdk8s.ApiObjectMetadata(name="external-dns-nodes",
                                                                                        labels=LABELS))
        role.allow(["get", "list", "watch"], kplus.ApiResource.custom(api_group="", resource_type="nodes"))
        binding = kplus.ClusterRoleBinding(self, "cluster-role-binding", role=role,
                                           metadata=cdk8s.ApiObjectMetadata(name="external-dns-nodes", labels=LABELS))
        binding.add_subjects(service_account)

        deployment = kplus.Deployment(
            self, "deployment",
            metadata=cdk8s.ApiObjectMetadata(name="external-dns", namespace=NAMESPACE, labels=LABELS),
            pod_metadata=cdk8s.ApiObjectMetadata(labels=LABELS), select=False, replicas=1,
            # Never two writers of the same records during a rollout.
            strategy=kplus.DeploymentStrategy.recreate(),
            service_account=service_account, automount_service_account_token=True, enable_service_links=False,
            security_context=kplus.PodSecurityContextProps(ensure_non_root=True, user=RUN_AS_UID, group=RUN_AS_UID),
        )
        deployment.select(kplus.LabelSelector.of(labels=LABELS))
        deployment.scheduling.attract(kplus.Node.labeled(
            *(kplus.NodeLabelQuery.is_(key, value) for key, value in node_selector.items())))
        cpu, memory = kplus.Cpu.millis(50), Size.mebibytes(128)
        health = kplus.Probe.from_http_get("/healthz", port=HEALTH_PORT, period_seconds=Duration.seconds(30),
                                           timeout_seconds=Duration.seconds(5), failure_threshold=3)
        deployment.add_container(
            name="external-dns", image=versions.EXTERNAL_DNS_IMAGE,
            image_pull_policy=kplus.ImagePullPolicy.IF_NOT_PRESENT,
            args=external_dns_args(acme, local_zones=local_zones, owner_id=owner_id),
            # Route 53 is global, but the SDK still needs a region to sign with; pods cannot reach IMDS.
            env_variables={"AWS_REGION": kplus.EnvValue.from_value(region)},
            ports=[kplus.ContainerPort(name="http", number=HEALTH_PORT, protocol=kplus.Protocol.TCP)],
            resources=kplus.ContainerResources(cpu=kplus.CpuResources(request=cpu, limit=kplus.Cpu.millis(200)),
                                               memory=kplus.MemoryResources(request=memory, limit=memory)),
            liveness=health, readiness=health,
            security_context=restricted_container(),
        )
        # PodSecurityContextProps has no seccompProfile; Pod Security "restricted" wants it at pod level too.
        cdk8s.ApiObject.of(deployment).add_json_patch(JsonPatch.add(
            "/spec/template/spec/securityContext/seccompProfile", k8s.SeccompProfile(type="RuntimeDefault")))
