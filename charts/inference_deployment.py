"""One accelerator's inference Deployment (container, probes, security context, volumes, scheduling) and its PDB."""
from __future__ import annotations

import cdk8s
import cdk8s_plus_35 as kplus
from cdk8s import Duration, JsonPatch, Size
from cdk8s_plus_35 import k8s
from constructs import Construct

from charts import contract as c
from charts.tls import TLS_DIR
from charts.security import restricted_container
from edge_config import WorkloadsConfig


_TAINT_EFFECTS = {"NoSchedule": kplus.TaintEffect.NO_SCHEDULE, "PreferNoSchedule": kplus.TaintEffect.PREFER_NO_SCHEDULE,
                  "NoExecute": kplus.TaintEffect.NO_EXECUTE}


def _http_probe(path: str, *, period_s: int, failures: int, success: int | None = None,
                https: bool = False) -> kplus.Probe:
    # With TLS the public port speaks nothing else; the kubelet's HTTPS probes do not verify the certificate.
    scheme = kplus.ConnectionScheme.HTTPS if https else kplus.ConnectionScheme.HTTP
    return kplus.Probe.from_http_get(
        path, port=c.HTTP_PORT, scheme=scheme, period_seconds=Duration.seconds(period_s),
        timeout_seconds=Duration.seconds(c.PROBE_TIMEOUT_S), failure_threshold=failures, success_threshold=success)


def _checkov_skips(workloads: WorkloadsConfig, udp_ports: tuple[int, int] | None = None) -> dict[str, str]:
    skips = {}
    if udp_ports:
        skips["checkov.io/skip3"] = (
            "CKV_K8S_26=WebRTC media must reach the pod on the node's public IP at the port its ICE candidate "
            "names; a NodePort cannot keep the port number, so each media port is a UDP hostPort of the same number "
            "(edge.workloads.webrtc_first_port/webrtc_port_count), open to edge.allowed_client_cidrs only")
    if workloads.image_reference_is_digest:
        return skips
    skips["checkov.io/skip1"] = (
        "CKV_K8S_43=the image follows the tag in edge.workloads.image_tag (set a sha256: digest there "
        "to pin it); imagePullPolicy Always re-resolves the tag on every pod start")
    if workloads.image_tag == "latest":
        skips["checkov.io/skip2"] = (
            "CKV_K8S_14=the default tracks the pipeline's moving tag so a first deploy needs no digest; "
            "production sets edge.workloads.image_tag to a release tag or sha256 digest")
    return skips


def _media_ports(udp_ports: tuple[int, int] | None) -> list[kplus.ContainerPort]:
    """WebRTC media: each UDP port of the range as a hostPort of the same number (ICE candidates name the port the
    server bound, so node port and pod port must be equal; a hostPort also keeps one such pod per node)."""
    if not udp_ports:
        return []
    first, last = udp_ports
    return [kplus.ContainerPort(name=f"rtc-{port - first}", number=port, host_port=port, protocol=kplus.Protocol.UDP)
            for port in range(first, last + 1)]


class InferenceDeployment(Construct):
    """The Deployment that serves one accelerator, and the disruption budget that keeps its drains one at a time."""

    def __init__(self, scope: Construct, construct_id: str, *, accelerator: str, image: str, namespace: str,
                 workloads: WorkloadsConfig, service_account: kplus.IServiceAccount, env: dict[str, str],
                 tls_secret: str | None = None, udp_ports: tuple[int, int] | None = None) -> None:
        super().__init__(scope, construct_id)
        w = workloads
        spec = c.ACCELERATORS[accelerator]
        selector = c.selector(accelerator)
        name = c.deployment_name(accelerator)
        startup_budget_s = c.startup_budget_s(w, accelerator)
        self.deployment = kplus.Deployment(
            self, "deployment",
            metadata=cdk8s.ApiObjectMetadata(name=name, namespace=namespace, labels={**c.COMMON_LABELS, **selector},
                                             annotations=_checkov_skips(w, udp_ports) or None),
            pod_metadata=cdk8s.ApiObjectMetadata(labels={**c.COMMON_LABELS, **selector}),
            # Our own labels select the pods (the PDB, Services and ScaledObject use the same ones).
            select=False,
            revision_history_limit=3,
            # Surge first: capacity never drops below the current replicas during a rollout.
            strategy=kplus.DeploymentStrategy.rolling_update(
                max_surge=kplus.PercentOrAbsolute.absolute(1), max_unavailable=kplus.PercentOrAbsolute.absolute(0)),
            progress_deadline=Duration.seconds(startup_budget_s + 300),
            service_account=service_account,
            # Only the serving container gets a token, through the explicit projected volume below.
            automount_service_account_token=False,
            enable_service_links=False,
            termination_grace_period=Duration.seconds(c.termination_grace_seconds(w)),
            security_context=kplus.PodSecurityContextProps(
                ensure_non_root=True, user=c.RUN_AS_UID, group=c.RUN_AS_UID, fs_group=c.RUN_AS_UID),
        )
        self.deployment.select(kplus.LabelSelector.of(labels=selector))
        # KEDA's HPA owns the replica count: no "replicas" field, so a re-applied manifest (every `cdk deploy`)
        # cannot reset a scaled-out Deployment and drain busy pods.
        self.deployment.mark_has_autoscaler()
        self.deployment.scheduling.attract(kplus.Node.labeled(
            kplus.NodeLabelQuery.is_(c.NODEPOOL_LABEL, accelerator),
            kplus.NodeLabelQuery.is_("kubernetes.io/os", "linux")))
        self.deployment.scheduling.tolerate(kplus.Node.tainted(
            kplus.NodeTaintQuery.exists(spec["taint"], effect=_TAINT_EFFECTS[spec["taint_effect"]])))

        scratch_gib = c.scratch_gib(w, accelerator)
        scratch = kplus.Volume.from_empty_dir(self, "scratch", "scratch", size_limit=Size.gibibytes(scratch_gib))
        api_access = kplus.Volume.from_name(self, "kube-api-access", "kube-api-access")
        cpu = kplus.Cpu.units(w.cpu_cores)
        memory = Size.gibibytes(w.memory_gib)
        storage = Size.gibibytes(scratch_gib)
        https = tls_secret is not None
        mounts = [kplus.VolumeMount(path=c.SCRATCH_DIR, volume=scratch),
                  kplus.VolumeMount(path=c.SERVICE_ACCOUNT_DIR, volume=api_access, read_only=True)]
        if tls_secret:
            # The whole Secret as a directory (no subPath): the kubelet swaps renewed files in, and the server
            # picks them up on the next handshake. Group-readable for the pod's fsGroup, nobody else.
            tls_volume = kplus.Volume.from_secret(
                self, "tls", kplus.Secret.from_secret_name(self, "tls-secret", tls_secret), name="tls",
                default_mode=0o440)
            mounts.append(kplus.VolumeMount(path=TLS_DIR, volume=tls_volume, read_only=True))
        self.deployment.add_container(
            name=c.CONTAINER_NAME,
            image=image,
            # A tag may be re-pushed by the pipeline; a digest never changes.
            image_pull_policy=kplus.ImagePullPolicy.IF_NOT_PRESENT if w.image_reference_is_digest
            else kplus.ImagePullPolicy.ALWAYS,
            # No command/args: the image's ENTRYPOINT is already `python -m serving serve`, configured by env.
            env_variables={key: kplus.EnvValue.from_value(value) for key, value in env.items()},
            ports=[kplus.ContainerPort(name=c.serving_port_name(https), number=c.HTTP_PORT, protocol=kplus.Protocol.TCP),
                   kplus.ContainerPort(name=c.METRICS_PORT_NAME, number=c.METRICS_PORT, protocol=kplus.Protocol.TCP),
                   *_media_ports(udp_ports)],
            # Guaranteed QoS: requests == limits, so the kubelet evicts these pods last under pressure.
            resources=kplus.ContainerResources(
                cpu=kplus.CpuResources(request=cpu, limit=cpu),
                memory=kplus.MemoryResources(request=memory, limit=memory),
                ephemeral_storage=kplus.EphemeralStorageResources(request=storage, limit=storage)),
            # /readyz turns 200 only after the model is loaded and warmed up; until then liveness is off.
            startup=_http_probe(c.READINESS_PATH, period_s=c.STARTUP_PERIOD_S,
                                failures=c.startup_failure_threshold(startup_budget_s), https=https),
            # Two misses: one slow answer while encoding a large image must not flap the endpoint. A drain needs
            # no probe at all: a terminating pod leaves the EndpointSlices at once.
            readiness=_http_probe(c.READINESS_PATH, period_s=c.READINESS_PERIOD_S, failures=2, success=1, https=https),
            liveness=_http_probe(c.LIVENESS_PATH, period_s=c.LIVENESS_PERIOD_S, failures=c.LIVENESS_FAILURES,
                                 https=https),
            security_context=restricted_container(),
            volume_mounts=mounts,
        )
        if udp_ports:
            # The server looks up this node's ExternalIP (the address its ICE candidates advertise) by name.
            self.deployment.containers[0].env.add_variable(
                "NODE_NAME", kplus.EnvValue.from_field_ref(kplus.EnvFieldPaths.NODE_NAME))
        self._escape_hatches(accelerator, w)
        self.disruption_budget = k8s.KubePodDisruptionBudget(
            self, "pdb",
            metadata=k8s.ObjectMeta(name=name, namespace=namespace, labels={**c.COMMON_LABELS, **selector}),
            spec=k8s.PodDisruptionBudgetSpec(
                # One voluntary eviction at a time (node drains, Karpenter drift/expiry); each evicted pod drains.
                max_unavailable=k8s.IntOrString.from_number(1),
                selector=k8s.LabelSelector(match_labels=selector),
                # A pod that never got ready serves nothing; it must not block a node drain.
                unhealthy_pod_eviction_policy="AlwaysAllow"),
        )

    def _escape_hatches(self, accelerator: str, w: WorkloadsConfig) -> None:
        """Fields cdk8s-plus-35 has no API for, each patched onto the rendered Deployment."""
        pod = "/spec/template/spec"
        container = f"{pod}/containers/0"
        selector = c.selector(accelerator)
        resource = c.ACCELERATORS[accelerator]["resource"].replace("/", "~1")
        # The patches land on the typed props before the L1 renders them, so their values are typed k8s structs.
        patches = [
            # ContainerResources knows only cpu, memory and ephemeral storage, not device-plugin resources.
            JsonPatch.add(f"{container}/resources/requests/{resource}", k8s.Quantity.from_string("1")),
            JsonPatch.add(f"{container}/resources/limits/{resource}", k8s.Quantity.from_string("1")),
            # Handler has command, httpGet and tcpSocket only; the kubelet's own sleep needs no binary in the image.
            # It keeps serving while the endpoint removal reaches every node's kube-proxy; the server then gets
            # SIGTERM, turns not-ready and drains.
            JsonPatch.add(f"{container}/lifecycle", k8s.Lifecycle(
                pre_stop=k8s.LifecycleHandler(sleep=k8s.SleepAction(seconds=w.prestop_sleep_s)))),
            # Not in ContainerProps: a crash before the first log line still leaves its reason in the pod status.
            JsonPatch.add(f"{container}/terminationMessagePolicy", "FallbackToLogsOnError"),
            # PodSecurityContextProps has no seccompProfile; at pod level it also covers ephemeral debug containers.
            JsonPatch.add(f"{pod}/securityContext/seccompProfile", k8s.SeccompProfile(type="RuntimeDefault")),
            # Volume has no projected source. Only this pod's server calls the Kubernetes API (the endpoint
            # inventory), so it gets the standard token/CA/namespace files with a short-lived rotating token.
            JsonPatch.add(f"{pod}/volumes/1/projected", k8s.ProjectedVolumeSource(default_mode=0o444, sources=[
                k8s.VolumeProjection(service_account_token=k8s.ServiceAccountTokenProjection(
                    path="token", expiration_seconds=3600)),
                k8s.VolumeProjection(config_map=k8s.ConfigMapProjection(
                    name="kube-root-ca.crt", items=[k8s.KeyToPath(key="ca.crt", path="ca.crt")])),
                k8s.VolumeProjection(downward_api=k8s.DownwardApiProjection(items=[k8s.DownwardApiVolumeFile(
                    path="namespace", field_ref=k8s.ObjectFieldSelector(api_version="v1",
                                                                        field_path="metadata.namespace"))])),
            ])),
            # PodScheduling has no topologySpreadConstraints (its spread() is pod anti-affinity, which cannot
            # express a preference over zones while requiring one replica per node).
            JsonPatch.add(f"{pod}/topologySpreadConstraints", [
                # One replica per node first: a node loss takes down one replica, never several.
                k8s.TopologySpreadConstraint(
                    max_skew=1, topology_key="kubernetes.io/hostname", when_unsatisfiable="DoNotSchedule",
                    label_selector=k8s.LabelSelector(match_labels=selector), match_label_keys=["pod-template-hash"]),
                # Zones only as a preference: a Local Zone is one zone, and forcing spread would push replicas
                # into the parent region, away from the devices.
                k8s.TopologySpreadConstraint(
                    max_skew=1, topology_key="topology.kubernetes.io/zone", when_unsatisfiable="ScheduleAnyway",
                    label_selector=k8s.LabelSelector(match_labels=selector), match_label_keys=["pod-template-hash"]),
            ]),
        ]
        for patch in patches:
            cdk8s.ApiObject.of(self.deployment).add_json_patch(patch)
