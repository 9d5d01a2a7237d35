"""The inference chart, synthesized standalone (cdk8s only, no CDK synth): every object and every invariant."""
from __future__ import annotations

import json
import math

import cdk8s
import pytest

import edge_config
from charts import inference
from charts.inference import InferenceChart
from serving.fleet import inventory as server_inventory
from serving.fleet import objects as server_objects
from serving.runtime.server import SHUTDOWN_MARGIN_S
from serving.core.settings import Settings, env_name, settings_from
from tests.conftest import REPO_ROOT
from tests.k8s_schema import validate_k8s_object

SECRET_ARN = "arn:aws:secretsmanager:us-west-2:111122223333:secret:edge-diffusion/inference-api-key-AbCdEf"
IMAGES = {
    "nvidia": "111122223333.dkr.ecr.us-west-2.amazonaws.com/edge-diffusion-cuda:latest",
    "neuron": "111122223333.dkr.ecr.us-west-2.amazonaws.com/edge-diffusion-neuron:latest",
}
SERVICE_ACCOUNT = "inference"
KEDA_NAMESPACE = "keda"
CACHE_BUCKET = "edgeclusterstack-compilecachebucket-0123456789ab"
# The cuda server's fast-path variables; the Neuron Deployment gets none of them.
FAST_PATH_ENV = {"SERVING_COMPILE", "SERVING_CUDA_GRAPHS", "SERVING_COMPILE_MODE", "SERVING_WARMUP_SIZES",
                 "SERVING_MAX_IMAGES", "SERVING_COMPILE_CACHE_DIR", "SERVING_COMPILE_CACHE_S3"}


def _config(**overrides) -> edge_config.EdgeConfig:
    context = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    context.update({f"edge.{key}": json.dumps(value) for key, value in overrides.items()})
    return edge_config.load_config(context)


def _render(cfg: edge_config.EdgeConfig) -> list[dict]:
    chart = InferenceChart(
        cdk8s.App(),
        "inference",
        workloads=cfg.workloads,
        accelerators=cfg.accelerators,
        images={acc: IMAGES[acc] for acc in cfg.accelerators},
        service_account_name=SERVICE_ACCOUNT,
        api_key_secret_arn=SECRET_ARN,
        region=cfg.region,
        autoscaler_namespace=KEDA_NAMESPACE,
        tls=cfg.tls,
        compile_cache_bucket=CACHE_BUCKET if cfg.workloads.cuda.s3_cache else None,
    )
    return chart.to_json()


def _one(objects: list[dict], kind: str, name: str) -> dict:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def _container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _env(deployment: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in _container(deployment)["env"] if "value" in e}


def _required_node_labels(pod: dict) -> dict[str, str]:
    """The node labels a pod requires (single-value `In` terms of its required node affinity)."""
    (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    return {e["key"]: e["values"][0] for e in term["matchExpressions"] if e["operator"] == "In" and len(e["values"]) == 1}


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _server_routes() -> tuple[set[str], frozenset[str]]:
    """The public app's route paths, and the paths it serves without the API key (kubelet probes send none)."""
    from serving.api.app import PUBLIC_PATHS, create_app
    from serving.engine.scheduler import Engine
    from serving.engine.state import ServerState

    engine = Engine(backend=None, max_concurrency=1, max_queue=0, request_timeout=30)
    try:
        app = create_app(ServerState(settings=Settings(model="/opt/model"), engine=engine))
    finally:
        engine.shutdown()
    return {route.path for route in app.routes}, PUBLIC_PATHS


@pytest.fixture(scope="module")
def cfg() -> edge_config.EdgeConfig:
    return _config()


@pytest.fixture(scope="module")
def objects(cfg) -> list[dict]:
    return _render(cfg)


@pytest.fixture(scope="module")
def deployments(objects) -> dict[str, dict]:
    return {d["metadata"]["labels"][inference.ACCELERATOR_LABEL]: d for d in _of_kind(objects, "Deployment")}


@pytest.fixture(scope="module")
def edge_service(objects) -> dict:
    return _one(objects, "Service", inference.SERVICE_NAME)


# ---------------------------------------------------------------- schema


def test_every_object_validates_strictly(objects):
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "Deployment", "Service", "ScaledObject", "PodDisruptionBudget", "ServiceAccount", "Role",
            "RoleBinding", "ClusterRole", "ClusterRoleBinding"} <= kinds
    for obj in objects:
        validate_k8s_object(obj)


def test_schema_validation_rejects_a_misspelt_field(objects):
    scaled = json.loads(json.dumps(_of_kind(objects, "ScaledObject")[0]))
    scaled["spec"]["maxReplicas"] = 3  # the CRD field is maxReplicaCount
    with pytest.raises(AssertionError):
        validate_k8s_object(scaled)


def test_namespaced_objects_live_in_the_workloads_namespace(objects, cfg):
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for obj in objects:
        if obj["kind"] in cluster_scoped:
            assert "namespace" not in obj["metadata"]
        else:
            assert obj["metadata"]["namespace"] == cfg.workloads.namespace, obj["metadata"]["name"]


# ---------------------------------------------------------------- namespace


def test_namespace_enforces_restricted_pod_security(objects, cfg):
    labels = _one(objects, "Namespace", cfg.workloads.namespace)["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"


# ---------------------------------------------------------------- deployments


def test_one_deployment_per_enabled_accelerator(deployments, cfg):
    assert set(deployments) == set(cfg.accelerators) == {"nvidia", "neuron"}
    assert _container(deployments["nvidia"])["image"] == IMAGES["nvidia"]
    assert "edge-diffusion-cuda" in _container(deployments["nvidia"])["image"]
    assert _container(deployments["neuron"])["image"] == IMAGES["neuron"]


def test_only_enabled_accelerators_get_a_deployment():
    objects = _render(_config(accelerators=["nvidia"]))
    assert [d["metadata"]["name"] for d in _of_kind(objects, "Deployment")] == ["inference-nvidia"]
    assert [s["metadata"]["name"] for s in _of_kind(objects, "ScaledObject")] == ["inference-nvidia"]
    assert len(_of_kind(objects, "PodDisruptionBudget")) == 1


def test_chart_rejects_an_accelerator_without_an_image(cfg):
    with pytest.raises(ValueError, match="neuron"):
        InferenceChart(cdk8s.App(), "x", workloads=cfg.workloads, accelerators=["nvidia", "neuron"],
                       images={"nvidia": IMAGES["nvidia"]}, service_account_name=SERVICE_ACCOUNT,
                       api_key_secret_arn=SECRET_ARN, region="us-west-2",
                       autoscaler_namespace=KEDA_NAMESPACE, tls=cfg.tls)


def test_service_selects_every_deployment(deployments, edge_service):
    selector = edge_service["spec"]["selector"]
    for deployment in deployments.values():
        assert _matches(selector, deployment["spec"]["template"]["metadata"]["labels"])
        # The Deployment's own selector is narrower: it never adopts the other accelerator's pods.
        assert _matches(deployment["spec"]["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"])
    own = [d["spec"]["selector"]["matchLabels"] for d in deployments.values()]
    assert own[0] != own[1]


@pytest.mark.parametrize(
    ("accelerator", "resource", "taint"),
    [("nvidia", "nvidia.com/gpu", "nvidia.com/gpu"), ("neuron", "aws.amazon.com/neuron", "aws.amazon.com/neuron")],
)
def test_accelerator_scheduling_and_resources(deployments, cfg, accelerator, resource, taint):
    pod = deployments[accelerator]["spec"]["template"]["spec"]
    assert _required_node_labels(pod) == {inference.NODEPOOL_LABEL: accelerator, "kubernetes.io/os": "linux"}
    assert pod["tolerations"] == [{"key": taint, "operator": "Exists", "effect": "NoSchedule"}]
    resources = _container(deployments[accelerator])["resources"]
    assert resources["limits"][resource] == "1"
    assert resources["requests"][resource] == "1"
    other = {"nvidia.com/gpu", "aws.amazon.com/neuron"} - {resource}
    assert not other & set(resources["limits"])
    # Guaranteed QoS: CPU and memory requested and capped at the same configured values.
    assert resources["requests"] == resources["limits"]
    assert resources["limits"]["cpu"] == f"{cfg.workloads.cpu_cores:g}"
    assert resources["limits"]["memory"] == f"{cfg.workloads.memory_gib * 1024}Mi"
    # nvidia pods with compile on get room for the compiler caches on top of the configured scratch space.
    scratch = cfg.workloads.ephemeral_storage_gib + (cfg.workloads.cuda.compile_scratch_gib
                                                     if accelerator == "nvidia" else 0)
    assert resources["limits"]["ephemeral-storage"] == f"{scratch}Gi"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["scratch"]["emptyDir"]["sizeLimit"] == f"{scratch * 1024}Mi"
    assert _env(deployments[accelerator])["SERVING_DEVICE"] == ("cuda" if accelerator == "nvidia" else "neuron")


def test_deployments_schedule_onto_their_nodepools(deployments, cfg):
    """Each Deployment fits a real NodePool of charts/nodepools.py: labels selected, taints tolerated, device limited."""
    from charts.nodepools import nodepool_objects

    pools = [o for o in nodepool_objects(cfg, node_role="KarpenterNodeRole") if o["kind"] == "NodePool"]
    for accelerator, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        resource = next(r for r in _container(deployment)["resources"]["limits"] if "/" in r)

        def fits(pool: dict) -> bool:
            template = pool["spec"]["template"]
            labels = dict(template["metadata"]["labels"])
            labels.update({r["key"]: r["values"][0] for r in template["spec"]["requirements"]
                           if r["operator"] == "In" and len(r["values"]) == 1})
            tolerated = all(any(t["key"] == taint["key"] and t["effect"] == taint["effect"] for t in pod["tolerations"])
                            for taint in template["spec"].get("taints", []))
            return _matches(_required_node_labels(pod), labels) and tolerated and resource in pool["spec"]["limits"]

        fitting = [p["metadata"]["name"] for p in pools if fits(p)]
        assert fitting, f"no NodePool runs {accelerator} pods"
        # ... and none of the other accelerator's pools does.
        assert all(p.startswith(accelerator) for p in fitting), fitting


def test_probes_and_ports_match_what_the_server_serves(deployments, edge_service, cfg):
    defaults = Settings(model="/opt/model")
    routes, unauthenticated = _server_routes()
    assert "/v1/endpoints" in routes
    for deployment in deployments.values():
        container = _container(deployment)
        ports = {p["name"]: p["containerPort"] for p in container["ports"] if p["protocol"] == "TCP"}
        # The default TLS mode (private-ca) serves HTTPS, and the port's name says so.
        assert cfg.tls.enabled
        assert ports == {"https": defaults.port, "metrics": defaults.metrics_port}
        for probe_name, path in (("startupProbe", "/readyz"), ("readinessProbe", "/readyz"),
                                 ("livenessProbe", "/healthz")):
            probe = container[probe_name]["httpGet"]
            assert probe["path"] == path and path in routes and path in unauthenticated
            assert probe["port"] == ports["https"] == defaults.port
    (port,) = edge_service["spec"]["ports"]
    assert port["port"] == defaults.port
    assert port["targetPort"] == defaults.port


def test_webrtc_media_reaches_the_nvidia_pods_on_udp_host_ports_only(deployments, cfg):
    first, last = cfg.workloads.webrtc_ports
    for accelerator, deployment in deployments.items():
        container = _container(deployment)
        udp = [p for p in container["ports"] if p["protocol"] == "UDP"]
        env = {e["name"]: e for e in container["env"]}
        if accelerator != "nvidia":
            assert not udp and "SERVING_WEBRTC_PORTS" not in env
            continue
        # ICE candidates name the bound port: node port == pod port, the whole range the server binds in.
        assert [(p["containerPort"], p["hostPort"]) for p in udp] == [(n, n) for n in range(first, last + 1)]
        assert env["SERVING_WEBRTC_PORTS"]["value"] == f"{first}-{last}"
        assert env["SERVING_WEBRTC_PUBLIC_HOST"]["value"] == "node"
        assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
        Settings(model="/opt/model", webrtc_ports=env["SERVING_WEBRTC_PORTS"]["value"], webrtc_public_host="node")


def _startup_budget(deployment: dict) -> int:
    probe = _container(deployment)["startupProbe"]
    return probe["periodSeconds"] * probe["failureThreshold"]


def test_startup_probe_budget_covers_the_model_load_timeout(deployments, cfg):
    w = cfg.workloads
    # A first nvidia pod compiles every warmed shape (1 size x guidance on/off x 1..4 images) before it is ready.
    assert w.cuda.compile and w.cuda.warmed_shapes == len(w.cuda.warmup_sizes) * 2 * w.cuda.max_images == 8
    needed = {"nvidia": w.model_load_timeout_s + 8 * w.cuda.compile_budget_per_shape_s,
              "neuron": w.model_load_timeout_s}
    for accelerator, deployment in deployments.items():
        assert _startup_budget(deployment) >= needed[accelerator]
        # ... and the rollout deadline outlasts a full startup.
        assert deployment["spec"]["progressDeadlineSeconds"] > needed[accelerator]
    assert needed["nvidia"] > 3 * w.model_load_timeout_s


@pytest.mark.parametrize("load_timeout", [10, 601, 3600])
def test_startup_budget_follows_the_configured_load_time(load_timeout):
    cfg = _config(workloads={"model_load_timeout_s": load_timeout, "cuda": {"compile": False}})
    for deployment in _of_kind(_render(cfg), "Deployment"):
        budget = _startup_budget(deployment)
        assert load_timeout <= budget < load_timeout + inference.STARTUP_PERIOD_S


def test_startup_budget_adds_the_compile_of_every_warmed_shape():
    cfg = _config(workloads={"model_load_timeout_s": 300, "cuda": {
        "warmup_sizes": ["512x512", "768x512"], "max_images": 2, "compile_budget_per_shape_s": 100}})
    deployments = {d["metadata"]["labels"][inference.ACCELERATOR_LABEL]: d for d in _of_kind(_render(cfg), "Deployment")}
    # 2 sizes x guidance on/off x 1..2 images = 8 shapes of 100 s each.
    assert _startup_budget(deployments["nvidia"]) == 300 + 800
    assert _startup_budget(deployments["neuron"]) == 300


def test_grace_period_outlasts_prestop_and_drain(deployments, cfg):
    w = cfg.workloads
    for deployment in deployments.values():
        pod = deployment["spec"]["template"]["spec"]
        container = _container(deployment)
        prestop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert prestop == w.prestop_sleep_s
        assert pod["terminationGracePeriodSeconds"] > prestop + w.drain_timeout_s
        server_drain = float(_env(deployment)["SERVING_DRAIN_TIMEOUT"])
        assert pod["terminationGracePeriodSeconds"] > prestop + server_drain
        # What the server really spends waiting for in-flight work (it keeps a reserve for closing sockets)
        # still covers a whole request admitted just before SIGTERM.
        assert server_drain - SHUTDOWN_MARGIN_S >= float(_env(deployment)["SERVING_REQUEST_TIMEOUT"])
        assert inference.SHUTDOWN_RESERVE_S >= SHUTDOWN_MARGIN_S


def test_restricted_security_context(deployments):
    for deployment in deployments.values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        sc = _container(deployment)["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["privileged"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert sc["readOnlyRootFilesystem"] is True
        # The only writable path is the /tmp emptyDir (HF_HOME lives under it).
        volumes = {v["name"]: v for v in pod["volumes"]}
        writable = [m for m in _container(deployment)["volumeMounts"] if not m.get("readOnly")]
        assert [(m["mountPath"], "emptyDir" in volumes[m["name"]]) for m in writable] == [("/tmp", True)]
        assert _env(deployment)["HF_HOME"].startswith("/tmp/")


def test_service_account_token_only_where_the_inventory_needs_it(objects, deployments):
    sa = _one(objects, "ServiceAccount", SERVICE_ACCOUNT)
    assert sa["automountServiceAccountToken"] is False
    for deployment in deployments.values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] == SERVICE_ACCOUNT
        projected = {v["name"]: v for v in pod["volumes"]}["kube-api-access"]["projected"]
        token = next(s["serviceAccountToken"] for s in projected["sources"] if "serviceAccountToken" in s)
        assert token["expirationSeconds"] <= 3600
        mount = next(m for m in _container(deployment)["volumeMounts"] if m["name"] == "kube-api-access")
        # Exactly where the inventory client reads the token, CA and namespace.
        assert mount["mountPath"] == str(server_inventory.SERVICE_ACCOUNT_DIR)
        assert mount["readOnly"] is True
        paths = {item["path"] for s in projected["sources"] for item in s.get("configMap", {}).get("items", [])}
        paths |= {s["serviceAccountToken"]["path"] for s in projected["sources"] if "serviceAccountToken" in s}
        paths |= {i["path"] for s in projected["sources"] for i in s.get("downwardAPI", {}).get("items", [])}
        assert paths == {"token", "ca.crt", "namespace"}


def test_topology_spread_across_nodes_and_zones(deployments):
    for deployment in deployments.values():
        constraints = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        by_key = {c["topologyKey"]: c for c in constraints}
        assert set(by_key) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
        for constraint in constraints:
            assert constraint["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
            assert constraint["maxSkew"] == 1


def test_pod_disruption_budget_per_deployment(objects, deployments):
    for accelerator, deployment in deployments.items():
        pdb = _one(objects, "PodDisruptionBudget", deployment["metadata"]["name"])
        assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        assert pdb["spec"]["maxUnavailable"] == 1


def test_rollout_never_drops_capacity(deployments):
    for deployment in deployments.values():
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        # The HPA owns the replica count; a re-applied manifest must not reset it.
        assert "replicas" not in deployment["spec"]


def test_container_env_is_the_server_contract(deployments, cfg):
    w = cfg.workloads
    for deployment in deployments.values():
        env = _env(deployment)
        serving_vars = {k for k in env if k.startswith("SERVING_")}
        known = {env_name(name) for name in Settings.__dataclass_fields__}
        assert serving_vars <= known, f"unknown server settings: {sorted(serving_vars - known)}"
        # The server's own parser accepts the environment as the pod gets it (the image sets SERVING_MODEL).
        settings = settings_from({}, environ={**env, "SERVING_MODEL": "/opt/model"})
        assert settings.port == inference.HTTP_PORT
        assert settings.metrics_port == inference.METRICS_PORT
        assert settings.drain_timeout == inference.server_drain_timeout_s(w)
        assert settings.request_timeout == w.request_timeout_s
        assert settings.max_queue == w.max_queue
        assert settings.max_concurrency == w.max_concurrency
        assert settings.api_key_secret_arn == SECRET_ARN
        assert settings.inventory_service == inference.SERVICE_NAME
        assert settings.inventory_namespace == w.namespace
        assert settings.inventory_node_port == w.node_port
        assert env["HF_HOME"] == "/tmp/hf"


def test_nvidia_pods_run_the_fast_path_the_config_describes(deployments, cfg):
    from serving.backends.cuda.backend import cuda_options
    from serving.backends.cuda.compilecache import CompileCache

    cuda = cfg.workloads.cuda
    env = _env(deployments["nvidia"])
    settings = settings_from({}, environ={**env, "SERVING_MODEL": "/opt/model"})
    assert settings.compile is True and settings.cuda_graphs is False
    # Spelled out: the server's own default for compile without graphs.
    assert settings.compile_mode == cuda.effective_compile_mode == "max-autotune-no-cudagraphs"
    assert settings.warmup_shapes == [(512, 512)]
    assert settings.max_images == cuda.max_images == 4
    assert settings.compile_cache_dir == inference.COMPILE_CACHE_DIR
    assert settings.compile_cache_s3 == f"s3://{CACHE_BUCKET}/compile-cache/"
    # The server's CUDA options accept the combination (what CudaBackend.load builds first).
    options = cuda_options(settings)
    assert options.compile and options.mode == "max-autotune-no-cudagraphs" and not options.graphs
    # The server's cache reads the bucket and the very prefix the pods' role is scoped to (tests/stacks).
    cache = CompileCache({"gpu": "test"}, directory=settings.compile_cache_dir, s3_url=settings.compile_cache_s3)
    assert (cache.bucket, cache.prefix) == (CACHE_BUCKET, cuda.compile_cache.s3_prefix)


def test_compile_cache_dir_is_on_the_writable_scratch_volume(deployments):
    container = _container(deployments["nvidia"])
    cache_dir = _env(deployments["nvidia"])["SERVING_COMPILE_CACHE_DIR"]
    (scratch,) = [m for m in container["volumeMounts"] if not m.get("readOnly")]
    assert cache_dir.startswith(scratch["mountPath"].rstrip("/") + "/")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_neuron_pods_get_no_fast_path_settings(deployments):
    assert not FAST_PATH_ENV & set(_env(deployments["neuron"]))
    assert FAST_PATH_ENV <= set(_env(deployments["nvidia"]))


def test_fast_path_without_compile_keeps_the_shape_policy_and_drops_the_cache(cfg):
    off = _config(workloads={"cuda": {"compile": False, "max_images": 2, "warmup_sizes": ["768x768"]}})
    deployments = {d["metadata"]["labels"][inference.ACCELERATOR_LABEL]: d for d in _of_kind(_render(off), "Deployment")}
    env = _env(deployments["nvidia"])
    assert not {"SERVING_COMPILE_MODE", "SERVING_COMPILE_CACHE_DIR", "SERVING_COMPILE_CACHE_S3"} & set(env)
    settings = settings_from({}, environ={**env, "SERVING_MODEL": "/opt/model"})
    assert settings.compile is False and settings.compile_mode is None
    assert settings.warmup_shapes == [(768, 768)] and settings.max_images == 2
    # No compiler caches to hold: the scratch volume is the configured size.
    resources = _container(deployments["nvidia"])["resources"]
    assert resources["limits"]["ephemeral-storage"] == f"{off.workloads.ephemeral_storage_gib}Gi"


def test_graph_modes_and_a_local_only_cache_render_as_configured():
    cfg = _config(workloads={"cuda": {"cuda_graphs": True, "compile_mode": "reduce-overhead",
                                      "compile_cache": {"s3": False}}})
    (nvidia,) = [d for d in _of_kind(_render(cfg), "Deployment") if d["metadata"]["name"] == "inference-nvidia"]
    env = _env(nvidia)
    assert "SERVING_COMPILE_CACHE_S3" not in env
    settings = settings_from({}, environ={**env, "SERVING_MODEL": "/opt/model"})
    assert settings.cuda_graphs is True and settings.compile_mode == "reduce-overhead"
    assert settings.compile_cache_dir == inference.COMPILE_CACHE_DIR and settings.max_concurrency == 1


def test_chart_needs_the_bucket_when_the_s3_cache_is_on(cfg):
    with pytest.raises(ValueError, match="compile_cache_bucket is required"):
        InferenceChart(cdk8s.App(), "inference", workloads=cfg.workloads, accelerators=cfg.accelerators,
                       images=IMAGES, service_account_name=SERVICE_ACCOUNT, api_key_secret_arn=SECRET_ARN,
                       region=cfg.region, autoscaler_namespace=KEDA_NAMESPACE, tls=cfg.tls)


# ---------------------------------------------------------------- service


def test_edge_service_is_a_local_nodeport_on_the_public_port_only(edge_service, cfg):
    spec = edge_service["spec"]
    assert spec["type"] == "NodePort"
    assert spec["externalTrafficPolicy"] == "Local"
    assert spec["ports"] == [
        {"name": "https", "protocol": "TCP", "port": 8080, "targetPort": 8080, "nodePort": cfg.workloads.node_port}
    ]


def test_metrics_port_is_never_on_a_nodeport(objects):
    for service in _of_kind(objects, "Service"):
        for port in service["spec"]["ports"]:
            if port["port"] == inference.METRICS_PORT or port["targetPort"] == "metrics":
                assert service["spec"]["type"] == "ClusterIP"
                assert "nodePort" not in port


def test_network_policy_keeps_the_metrics_port_for_the_autoscaler_and_the_collector(objects, deployments):
    from charts import observability as obs

    (policy,) = _of_kind(objects, "NetworkPolicy")
    spec = policy["spec"]
    for deployment in deployments.values():
        assert _matches(spec["podSelector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"])
    assert spec["policyTypes"] == ["Ingress"]
    by_port: dict[int, list] = {}
    for rule in spec["ingress"]:
        tcp = [port for port in rule["ports"] if port["protocol"] == "TCP"]
        assert len(tcp) == 1
        by_port.setdefault(tcp[0]["port"], []).extend(rule["from"])
        # The only other port: the nvidia pods' WebRTC media range, beside the public port (same clients).
        udp = [port for port in rule["ports"] if port["protocol"] == "UDP"]
        assert not udp or (tcp[0]["port"] == inference.HTTP_PORT and len(udp) == 1 and "endPort" in udp[0])
    assert set(by_port) == {inference.HTTP_PORT, inference.METRICS_PORT}
    # Anyone: the cluster is IPv4-only, and the node security group decides who reaches the NodePort.
    assert by_port[inference.HTTP_PORT] == [{"ipBlock": {"cidr": "0.0.0.0/0"}}]
    # KEDA reads /load; the metrics collector (its namespace AND its pod labels) reads /metrics; nobody else.
    assert by_port[inference.METRICS_PORT] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": KEDA_NAMESPACE}}, "podSelector": {}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": obs.COLLECTOR_NAMESPACE}},
         "podSelector": {"matchLabels": obs.COLLECTOR_LABELS}},
    ]


def test_node_port_comes_from_config():
    objects = _render(_config(workloads={"node_port": 31555}))
    (port,) = _one(objects, "Service", inference.SERVICE_NAME)["spec"]["ports"]
    assert port["nodePort"] == 31555
    for deployment in _of_kind(objects, "Deployment"):
        assert _env(deployment)["SERVING_INVENTORY_NODE_PORT"] == "31555"


# ---------------------------------------------------------------- inventory RBAC


def test_inventory_rbac_is_minimal_and_read_only(objects, cfg):
    roles = _of_kind(objects, "Role")
    cluster_roles = _of_kind(objects, "ClusterRole")
    assert len(roles) == 1 and len(cluster_roles) == 1
    assert roles[0]["rules"] == [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}
    ]
    # cdk8s-plus writes an empty resourceNames on cluster roles: no restriction by name, as when absent.
    assert cluster_roles[0]["rules"] == [
        {"apiGroups": [""], "resourceNames": [], "resources": ["nodes"], "verbs": ["get", "list"]}]
    # The core API group of a ServiceAccount subject is written out as "" by cdk8s-plus.
    subject = {"apiGroup": "", "kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": cfg.workloads.namespace}
    (binding,) = _of_kind(objects, "RoleBinding")
    assert binding["roleRef"]["name"] == roles[0]["metadata"]["name"] and binding["subjects"] == [subject]
    (cluster_binding,) = _of_kind(objects, "ClusterRoleBinding")
    assert cluster_binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                          "name": cluster_roles[0]["metadata"]["name"]}
    assert cluster_binding["subjects"] == [subject]


def test_inventory_lists_the_edge_service_endpoints(objects, cfg):
    """EndpointSlices of the edge Service, as the API would publish them, turn into device URLs."""
    service = _one(objects, "Service", inference.SERVICE_NAME)
    endpoint_slice = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "edge-diffusion-abcde", "namespace": cfg.workloads.namespace,
                     "labels": {server_inventory.SERVICE_NAME_LABEL: service["metadata"]["name"]}},
        "addressType": "IPv4",
        "ports": [{"name": "https", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.40.128.12"], "conditions": {"ready": True, "serving": True,
                                                                       "terminating": False},
                       "nodeName": "ip-10-40-128-5.us-west-2.compute.internal", "zone": "us-west-2-lax-1a"}],
    }
    node = {
        "metadata": {"name": "ip-10-40-128-5.us-west-2.compute.internal",
                     "labels": {"topology.kubernetes.io/zone": "us-west-2-lax-1a",
                                "karpenter.k8s.aws/instance-gpu-manufacturer": "nvidia",
                                inference.NODEPOOL_LABEL: "nvidia"}},
        "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.40.128.5"},
                                 {"type": "ExternalIP", "address": "198.51.100.7"}],
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }
    validate_k8s_object(endpoint_slice)
    items = server_inventory.endpoints_from_objects([endpoint_slice], [node], service["spec"]["ports"][0]["nodePort"])
    url = f"http://198.51.100.7:{cfg.workloads.node_port}"
    assert items == [{"url": url, "stream_url": server_objects.stream_url(url), "webrtc_url": server_objects.webrtc_url(url),
                      "zone": "us-west-2-lax-1a",
                      "accelerator": "nvidia", "ready": True}]


# ---------------------------------------------------------------- autoscaling


def test_one_scaled_object_per_deployment_on_the_load_signal(objects, deployments, cfg):
    w = cfg.workloads
    for accelerator, deployment in deployments.items():
        scaled = _one(objects, "ScaledObject", deployment["metadata"]["name"])["spec"]
        assert scaled["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                            "name": deployment["metadata"]["name"]}
        assert scaled["minReplicaCount"] == w.min_replicas
        assert scaled["maxReplicaCount"] == w.max_replicas
        (trigger,) = scaled["triggers"]
        assert trigger["type"] == "metrics-api"
        assert trigger["metricType"] == "Value"
        meta = trigger["metadata"]
        assert float(meta["targetValue"]) == w.target_load
        assert meta["valueLocation"] == "load"
        # The URL points at this Deployment's metrics Service, which selects exactly its pods on 9090.
        host, _, rest = meta["url"].removeprefix("http://").partition(":")
        service_name, namespace = host.split(".")[:2]
        assert namespace == w.namespace
        service = _one(objects, "Service", service_name)
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        (port,) = service["spec"]["ports"]
        assert rest == f"{port['port']}/load" and port["port"] == Settings(model="x").metrics_port
        assert port["targetPort"] == inference.METRICS_PORT


def test_scale_down_waits_for_drains(objects, deployments, cfg):
    for deployment in deployments.values():
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        behavior = _one(objects, "ScaledObject", deployment["metadata"]["name"])["spec"]["advanced"][
            "horizontalPodAutoscalerConfig"]["behavior"]
        down = behavior["scaleDown"]
        assert down["stabilizationWindowSeconds"] == cfg.workloads.scale_down_stabilization_s
        assert down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": down["policies"][0]["periodSeconds"]}]
        # At most one pod leaves per full grace period: each finishes draining before the next is chosen.
        assert down["policies"][0]["periodSeconds"] >= grace


def test_load_signal_is_what_the_server_reports():
    """The scaler reads `load` from GET /load on the metrics port: (in_flight + queued) / max_concurrency."""
    from serving.engine.scheduler import Engine
    from serving.runtime.metrics import Metrics

    engine = Engine(backend=None, max_concurrency=2, max_queue=3, request_timeout=30)
    try:
        engine.running, engine.waiting = 1, 3
        snapshot = engine.load_snapshot()
    finally:
        engine.shutdown()
    assert snapshot[inference.LOAD_FIELD] == 2.0
    routes = {route.path for route in Metrics(engine.load_snapshot, lambda: True).app().routes}
    assert inference.LOAD_PATH in routes


# ---------------------------------------------------------------- images and digests


def test_tag_images_are_always_pulled_and_documented_for_checkov(deployments):
    for accelerator, deployment in deployments.items():
        assert _container(deployment)["imagePullPolicy"] == "Always"
        skips = {v.split("=", 1)[0] for k, v in deployment["metadata"]["annotations"].items()
                 if k.startswith("checkov.io/skip")}
        # CKV_K8S_26 (hostPort): the WebRTC media ports, nvidia only.
        assert skips == {"CKV_K8S_43", "CKV_K8S_14"} | ({"CKV_K8S_26"} if accelerator == "nvidia" else set())


def test_digest_pinned_images_need_no_checkov_skip():
    digest = "sha256:" + "a" * 64
    objects = _render(_config(workloads={"image_tag": digest}))
    for deployment in _of_kind(objects, "Deployment"):
        assert _container(deployment)["imagePullPolicy"] == "IfNotPresent"
        skips = {v.split("=", 1)[0] for v in (deployment["metadata"].get("annotations") or {}).values()}
        assert skips <= {"CKV_K8S_26"}


# ---------------------------------------------------------------- config validation


@pytest.mark.parametrize(
    ("workloads", "field", "message"),
    [
        ({"node_port": 8080}, "edge.workloads.node_port", "between 30000 and 32767"),
        ({"node_port": 32768}, "edge.workloads.node_port", "between 30000 and 32767"),
        ({"min_replicas": 5, "max_replicas": 2}, "edge.workloads.min_replicas", "min_replicas <= max_replicas"),
        ({"min_replicas": 0}, "edge.workloads.min_replicas", "between 1 and 100"),
        ({"drain_timeout_s": 10, "request_timeout_s": 30}, "edge.workloads.drain_timeout_s",
         "drain_timeout_s >= request_timeout_s"),
        ({"target_load": 0}, "edge.workloads.target_load", "between 0.1 and 64"),
        ({"memory_gib": "12GB"}, "edge.workloads.memory_gib", "expected an integer"),
        ({"memory_gib": 1}, "edge.workloads.memory_gib", "between 4 and 2048"),
        ({"cpu_cores": 0.5}, "edge.workloads.cpu_cores", "between 1 and 192"),
        ({"namespace": "kube-system"}, "edge.workloads.namespace", "dedicated namespace"),
        ({"namespace": "Edge_Diffusion"}, "edge.workloads.namespace", "DNS label"),
        ({"image_tag": "sha256:xyz"}, "edge.workloads.image_tag", "digest"),
        ({"replicas": 2}, "edge.workloads.replicas", "unknown field"),
        ({"cuda": {"warmup_sizes": ["512x500"]}}, "edge.workloads.cuda.warmup_sizes[0]", "multiple of 8"),
        ({"cuda": {"warmup_sizes": ["2048x512"]}}, "edge.workloads.cuda.warmup_sizes[0]", "within 64..1024"),
        ({"cuda": {"warmup_sizes": ["512"]}}, "edge.workloads.cuda.warmup_sizes[0]", "not WIDTHxHEIGHT"),
        ({"cuda": {"warmup_sizes": []}}, "edge.workloads.cuda.warmup_sizes", "must not be empty"),
        ({"cuda": {"max_images": 0}}, "edge.workloads.cuda.max_images", "between 1 and 8"),
        ({"cuda": {"compile_mode": "fastest"}}, "edge.workloads.cuda.compile_mode", "unknown compile mode"),
        ({"cuda": {"compile": False, "compile_mode": "default"}}, "edge.workloads.cuda.compile_mode",
         "only applies with compile on"),
        ({"cuda": {"cuda_graphs": True, "compile_mode": "default"}}, "edge.workloads.cuda.compile_mode",
         "captures no CUDA graphs"),
        ({"max_concurrency": 2, "cuda": {"cuda_graphs": True}}, "edge.workloads.cuda.cuda_graphs",
         "set edge.workloads.max_concurrency to 1"),
        ({"max_concurrency": 2, "cuda": {"compile_mode": "max-autotune"}}, "edge.workloads.cuda.compile_mode",
         "max_concurrency is 2"),
        ({"cuda": {"compile_cache": {"s3_prefix": "/cache"}}}, "edge.workloads.cuda.compile_cache.s3_prefix",
         "relative key prefix ending in '/'"),
        ({"cuda": {"compile_cache": {"s3_prefix": "cache"}}}, "edge.workloads.cuda.compile_cache.s3_prefix",
         "relative key prefix ending in '/'"),
        ({"cuda": {"compile_cache": {"s3": "yes"}}}, "edge.workloads.cuda.compile_cache.s3", "true or false"),
        ({"cuda": {"max_images": 8, "warmup_sizes": ["512x512", "768x768", "640x640", "512x768"]}},
         "edge.workloads.cuda.warmup_sizes", "startup budget"),
        ({"cuda": {"warmpu_sizes": ["512x512"]}}, "edge.workloads.cuda.warmpu_sizes", "unknown field"),
    ],
)
def test_bad_workloads_config_names_the_field(workloads, field, message):
    with pytest.raises(edge_config.ConfigError) as excinfo:
        _config(workloads=workloads)
    text = str(excinfo.value)
    assert text.startswith(f"{field}:"), text
    assert message in text


def test_context_override_of_one_field():
    context = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    context["edge.workloads.max_replicas"] = "7"
    cfg = edge_config.load_config(context)
    assert cfg.workloads.max_replicas == 7
    objects = _render(cfg)
    assert {s["spec"]["maxReplicaCount"] for s in _of_kind(objects, "ScaledObject")} == {7}


def test_startup_failure_threshold_rounds_up():
    assert inference.startup_failure_threshold(601) == math.ceil(601 / inference.STARTUP_PERIOD_S)


def test_rendered_chart_snapshot(objects, snapshot):
    """Every object as rendered from the default config; review the diff when the chart changes."""
    assert objects == snapshot


def test_container_command_parses_with_the_image_entrypoint(deployments, monkeypatch):
    """The Dockerfile ENTRYPOINT plus the container's args must be a command line the server accepts."""
    import re

    import serving.__main__ as cli

    dockerfile = (REPO_ROOT / "serving" / "Dockerfile").read_text()
    for accelerator, deployment in deployments.items():
        container = _container(deployment)
        target = {"nvidia": "cuda", "neuron": "neuron"}[accelerator]
        stage = re.search(rf"^FROM \S+ AS {target}\n(.*?)(?=^FROM |\Z)", dockerfile, re.M | re.S)
        assert stage, f"Dockerfile has no final target {target!r}"
        entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", stage.group(1), re.M).group(1))
        command = container.get("command", entrypoint)
        assert command[:3] == ["python", "-m", "serving"], command
        seen = []
        monkeypatch.setattr(cli, "_serve", lambda args: seen.append(args) or 0)
        # argparse exits 2 on anything it does not accept (e.g. a doubled "serve").
        assert cli.main(command[3:] + container.get("args", [])) == 0
        assert len(seen) == 1
