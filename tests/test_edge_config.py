"""edge_config: defaults load without AWS access; every bad value fails naming its field and the fix."""
from __future__ import annotations

import copy
import json
import re

import pydantic
import pytest

import edge_config
import versions
from edge_config import ConfigError, load_config
from tests.conftest import REPO_ROOT

DEFAULT_CONTEXT = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]


def ctx(**overrides):
    """The cdk.json context plus `edge.<path>` overrides (keys use '__' for '.')."""
    context = copy.deepcopy(DEFAULT_CONTEXT)
    for key, value in overrides.items():
        context["edge." + key.replace("__", ".")] = value
    return context


def error_for(**overrides) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(ctx(**overrides))
    message = str(info.value)
    assert "Fix:" in message, message
    return message


def test_default_config_is_complete_and_typed():
    cfg = load_config(DEFAULT_CONTEXT)
    assert cfg.region == "us-west-2"
    assert cfg.account is None  # env-agnostic account: synth needs no credentials
    assert [lz.name for lz in cfg.local_zones] == ["us-west-2-lax-1a"]
    assert cfg.local_zones[0].accelerators == ("nvidia",)
    assert cfg.accelerators == ("nvidia", "neuron")
    assert cfg.kubernetes_version == versions.KUBERNETES_VERSION == "1.35"
    assert cfg.allowed_client_cidrs == ("203.0.113.0/24",)
    assert cfg.allow_public_nodeport is False
    assert set(cfg.nodepool_limits) == {"nvidia", "neuron"}
    assert cfg.pipeline.repository_name("cuda") == "edge-diffusion-cuda"
    assert len(cfg.pipeline.targets) == 4
    assert cfg.workloads.node_port == 30080
    assert cfg.region_subnets == {"public": ["10.40.0.0/22", "10.40.4.0/22"],
                                  "private": ["10.40.16.0/20", "10.40.32.0/20"]}


def test_config_objects_are_frozen():
    cfg = load_config(DEFAULT_CONTEXT)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        cfg.region = "eu-west-1"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        cfg.workloads.node_port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.nodepool_limits["nvidia"] = None  # type: ignore[index]


def test_local_zone_of_another_region():
    message = error_for(local_zones__0__name="us-east-1-bos-1a")
    assert message.startswith("edge.local_zones[0].name:")
    assert "not a Local Zone of region us-west-2" in message


def test_local_zone_name_that_is_a_parent_az():
    assert error_for(local_zones__0__name="us-west-2a").startswith("edge.local_zones[0].name:")


def test_parent_az_of_another_region():
    message = error_for(region_azs='["us-west-2a", "us-east-1b"]')
    assert message.startswith("edge.region_azs[1]:")


def test_single_parent_az_is_rejected():
    assert "at least 2 AZs" in error_for(region_azs='["us-west-2a"]')


def test_local_zone_subnet_overlapping_a_region_subnet():
    message = error_for(local_zones__0__subnet_cidr="10.40.16.0/22")
    assert message.startswith("edge.local_zones[0].subnet_cidr:")
    assert "overlaps 10.40.16.0/20 (region private subnet in us-west-2a)" in message


def test_local_zone_subnets_overlapping_each_other():
    zones = json.dumps([
        {"name": "us-west-2-lax-1a", "subnet_cidr": "10.40.128.0/22", "instance_families": ["g4dn"]},
        {"name": "us-west-2-lax-1b", "subnet_cidr": "10.40.130.0/24", "instance_families": ["g5"]},
    ])
    message = error_for(local_zones=zones)
    assert message.startswith("edge.local_zones[1].subnet_cidr:")
    assert "overlaps 10.40.128.0/22" in message


def test_overlapping_client_cidrs():
    message = error_for(allowed_client_cidrs='["198.51.100.0/24", "198.51.100.128/25"]')
    assert message.startswith("edge.allowed_client_cidrs[1]:")
    assert "overlaps" in message


def test_local_zone_subnet_outside_the_vpc():
    assert "outside the VPC CIDR" in error_for(local_zones__0__subnet_cidr="10.41.0.0/22")


def test_empty_allowed_client_cidrs():
    message = error_for(allowed_client_cidrs="[]")
    assert message.startswith("edge.allowed_client_cidrs:")
    assert "no device could reach" in message


def test_public_nodeport_requires_explicit_opt_in():
    message = error_for(allowed_client_cidrs='["0.0.0.0/0"]')
    assert message.startswith("edge.allowed_client_cidrs[0]:")
    assert "allow_public_nodeport" in message
    cfg = load_config(ctx(allowed_client_cidrs='["0.0.0.0/0"]', allow_public_nodeport="true"))
    assert cfg.allow_public_nodeport is True and cfg.allowed_client_cidrs == ("0.0.0.0/0",)


def test_cluster_endpoint_never_open_to_the_internet():
    assert error_for(cluster_endpoint_cidrs='["0.0.0.0/0"]').startswith("edge.cluster_endpoint_cidrs[0]:")


def test_unknown_accelerator():
    message = error_for(accelerators='["nvidia", "tpu"]')
    assert message.startswith("edge.accelerators[1]:")
    assert "unknown accelerator 'tpu'" in message and "nvidia, neuron" in message


def test_unknown_instance_family_in_a_local_zone():
    message = error_for(local_zones__0__instance_families='["g4dn", "p9"]')
    assert message.startswith("edge.local_zones[0].instance_families[1]:")


def test_local_zone_without_an_enabled_accelerator():
    message = error_for(accelerators='["neuron"]')
    assert message.startswith("edge.local_zones[0].instance_families:")


def test_invalid_and_ipv6_cidrs():
    assert "not a valid CIDR" in error_for(allowed_client_cidrs='["203.0.113.7/24"]')
    assert "IPv6" in error_for(allowed_client_cidrs='["2001:db8::/32"]')


def test_unknown_keys_are_typos():
    assert error_for(regoin="us-west-2").startswith("edge.regoin: unknown field")
    assert error_for(workloads__node_prot="30090").startswith("edge.workloads.node_prot: unknown field")
    assert error_for(local_zones__0__gp3="true").startswith("edge.local_zones[0].gp3: unknown field")


def test_kubernetes_version_is_pinned():
    message = error_for(kubernetes_version='"1.34"')
    assert message.startswith("edge.kubernetes_version:")
    assert "versions.py" in message


def test_dotted_overrides_are_json_parsed_or_kept_as_strings():
    cfg = load_config(ctx(workloads__node_port="30090", cluster_name="edge-test",
                          local_zones__0__instance_families='["g4dn", "g5", "g6"]'))
    assert cfg.workloads.node_port == 30090
    assert cfg.cluster_name == "edge-test"
    assert cfg.local_zones[0].families_for("nvidia") == ("g4dn", "g5", "g6")


def test_override_of_a_missing_list_index():
    message = error_for(local_zones__3__name="us-west-2-den-1a")
    assert message.startswith("edge.local_zones.3:")
    assert "index" in message


def test_whole_edge_object_may_come_as_a_json_string():
    context = copy.deepcopy(DEFAULT_CONTEXT)
    context["edge"] = json.dumps(context["edge"])
    assert load_config(context).region == "us-west-2"


def test_missing_edge_context():
    with pytest.raises(ConfigError, match=r"^edge: no config found"):
        load_config({})


def test_nodeport_outside_the_kubernetes_range():
    message = error_for(workloads__node_port="8080")
    assert message.startswith("edge.workloads.node_port:")
    assert "30000 and 32767" in message


def test_workload_replicas_are_consistent():
    assert error_for(workloads__min_replicas="5").startswith("edge.workloads.min_replicas:")


def test_image_tag_or_digest():
    digest = "sha256:" + "a" * 64
    assert load_config(ctx(workloads__image_tag=digest)).workloads.image_reference_is_digest
    assert error_for(workloads__image_tag="bad tag!").startswith("edge.workloads.image_tag:")


def test_admin_principal_must_be_an_iam_arn():
    assert error_for(admin_principal_arn="admin").startswith("edge.admin_principal_arn:")
    arn = "arn:aws:iam::123456789012:role/Admin"
    assert load_config(ctx(admin_principal_arn=arn)).admin_principal_arn == arn


def test_account_must_be_twelve_digits():
    assert error_for(account='"12345"').startswith("edge.account:")
    assert load_config(ctx(account='"123456789012"')).account == "123456789012"


def test_system_nodes_are_graviton_and_sized_consistently():
    assert "Graviton" in error_for(system_nodes__instance_types='["m7i.large"]')
    assert error_for(system_nodes__desired_size="9").startswith("edge.system_nodes.desired_size:")


def test_nodepool_limits_validated():
    assert error_for(nodepool_limits__nvidia__cpu='"lots"').startswith("edge.nodepool_limits.nvidia.cpu:")
    assert error_for(nodepool_limits__tpu="{}").startswith("edge.nodepool_limits.tpu: unknown field")


def test_capacity_types():
    assert error_for(capacity_types='["reserved"]').startswith("edge.capacity_types[0]:")


def test_pipeline_section_validation():
    assert error_for(pipeline__source="codeconnections").startswith("edge.pipeline.connection_arn:")
    assert error_for(pipeline__targets='[{"accelerator": "neuron", "arch": "arm64"}]').startswith(
        "edge.pipeline.targets[0].arch:")
    assert error_for(pipeline__targets="[]").startswith("edge.pipeline.targets:")
    assert error_for(pipeline__repository_prefix="Edge Diffusion").startswith("edge.pipeline.repository_prefix:")
    assert error_for(pipeline__neuron_compile__height="500").startswith("edge.pipeline.neuron_compile.height:")
    assert error_for(pipeline__notification_emails='["nobody"]').startswith("edge.pipeline.notification_emails[0]:")


def test_vpc_cidr_must_be_private_and_sized():
    assert "RFC 1918" in error_for(vpc_cidr="8.8.0.0/16")
    assert error_for(vpc_cidr="10.40.0.0/24").startswith("edge.vpc_cidr:")


def test_region_subnet_model_is_aligned():
    # Three AZs: three /22 public blocks, then /20 private blocks aligned to the next /20 boundary.
    assert edge_config.region_subnet_cidrs("10.0.0.0/16", 3) == {
        "public": ["10.0.0.0/22", "10.0.4.0/22", "10.0.8.0/22"],
        "private": ["10.0.16.0/20", "10.0.32.0/20", "10.0.48.0/20"],
    }


def test_every_error_names_a_full_field_path():
    cases = [dict(regoin="x"), dict(workloads__node_port="1"), dict(allowed_client_cidrs="[]"),
             dict(local_zones__0__name="x")]
    for case in cases:
        assert re.match(r"^edge(\.[a-z_]+|\[\d+\])*: ", error_for(**case))


def test_build_app_rejects_bad_config_before_synth():
    from app import build_app

    with pytest.raises(ConfigError, match=r"edge\.allowed_client_cidrs\[0\]"):
        build_app({"edge.allowed_client_cidrs": '["0.0.0.0/0"]'})


def test_numeric_looking_overrides_keep_their_text_for_string_fields():
    cfg = load_config(ctx(account="123456789012", workloads__image_tag="1.10", workloads__node_port="30090"))
    assert cfg.account == "123456789012"
    assert cfg.workloads.image_tag == "1.10"
    assert cfg.workloads.node_port == 30090
    assert load_config(ctx(kubernetes_version="1.35")).kubernetes_version == "1.35"
    assert "expected an integer" in error_for(workloads__node_port="30090.5")


def test_single_system_node_cannot_host_karpenter():
    message = error_for(system_nodes__min_size=1, system_nodes__desired_size=2)
    assert "edge.system_nodes.min_size" in message and "Karpenter" in message


def test_switches_take_only_json_booleans():
    # A public endpoint must be asked for with `true`, not inferred from "yes" or 1.
    for value in ('"yes"', "1", '"true"'):
        message = error_for(allow_public_nodeport=value)
        assert message.startswith("edge.allow_public_nodeport: expected true or false"), message
    assert load_config(ctx(allow_public_nodeport="true")).allow_public_nodeport is True


# ---------------------------------------------------------------- workloads.cuda (GPU fast path)


def test_gpu_fast_path_defaults_compile_with_the_s3_cache():
    cuda = load_config(DEFAULT_CONTEXT).workloads.cuda
    assert cuda.compile is True and cuda.compile_cache.s3 is True and cuda.s3_cache is True
    assert cuda.effective_compile_mode == "max-autotune-no-cudagraphs" and not cuda.captures_graphs
    assert cuda.warmup_sizes == ("512x512",) and cuda.max_images == 4
    assert cuda.warmed_shapes == 8 and cuda.compile_budget_s == 8 * 240
    assert cuda.compile_cache.s3_prefix == "compile-cache/" and cuda.compile_cache.expiration_days == 30


def test_cdk_json_spells_out_the_model_defaults_of_the_fast_path():
    # cdk.json shows operators the knobs; it must not drift from the defaults the models document.
    assert DEFAULT_CONTEXT["edge"]["workloads"]["cuda"] == edge_config.CudaPathConfig().model_dump(mode="json")


def test_fast_path_bounds_are_the_servers():
    from serving.core.settings import COMPILE_MODES, Settings
    from edge_config import cuda_path

    assert set(cuda_path.CompileMode.__args__) == set(COMPILE_MODES)
    defaults = Settings(model="/opt/model")
    assert (cuda_path.MIN_IMAGE_SIZE, cuda_path.MAX_IMAGE_SIZE) == (defaults.min_image_size, defaults.max_image_size)
    # The chart leaves the server's size bounds at their defaults, so the config's check is the server's check.
    from charts.inference import cuda_env

    env = cuda_env(load_config(DEFAULT_CONTEXT).workloads, "bucket")
    assert not {"SERVING_MIN_IMAGE_SIZE", "SERVING_MAX_IMAGE_SIZE"} & set(env)


def test_fast_path_errors_name_the_field_and_the_fix():
    assert error_for(workloads__cuda__warmup_sizes='["1024x1032"]').startswith(
        "edge.workloads.cuda.warmup_sizes[0]: 1024x1032: 1032 is not a multiple of 8 within 64..1024")
    assert error_for(workloads__cuda__warmup_sizes='["512x512", "512x512"]').startswith(
        "edge.workloads.cuda.warmup_sizes[1]: duplicate value")
    assert "at most 8 sizes" in error_for(
        workloads__cuda__warmup_sizes=json.dumps([f"{64 + 8 * i}x512" for i in range(9)]))
    message = error_for(workloads__max_concurrency="4", workloads__cuda__cuda_graphs="true")
    assert message.startswith("edge.workloads.cuda.cuda_graphs:") and "max_concurrency to 1" in message
    assert error_for(workloads__cuda__compile_cache__expiration_days="0").startswith(
        "edge.workloads.cuda.compile_cache.expiration_days: 0 is out of range")


def test_fast_path_overrides_one_field_at_a_time():
    cfg = load_config(ctx(workloads__cuda__compile="false"))
    assert cfg.workloads.cuda.compile is False and cfg.workloads.cuda.s3_cache is False
    assert cfg.workloads.cuda.compile_budget_s == 0 and cfg.workloads.cuda.effective_compile_mode is None
    cfg = load_config(ctx(workloads__cuda__compile_cache__s3="false"))
    assert cfg.workloads.cuda.compile is True and cfg.workloads.cuda.s3_cache is False
    cfg = load_config(ctx(workloads__cuda__cuda_graphs="true"))
    assert cfg.workloads.cuda.effective_compile_mode == "max-autotune" and cfg.workloads.cuda.captures_graphs


def test_a_cuda_image_for_an_architecture_no_pool_launches_is_refused():
    targets = [{"accelerator": "cuda", "arch": "amd64"}, {"accelerator": "cuda", "arch": "arm64"}]
    message = error_for(pipeline__targets=json.dumps(targets))
    assert message.startswith("edge.pipeline.targets[1].arch:"), message
    assert "no NodePool launches an NVIDIA arm64 node" in message and "remove the cuda arm64 target" in message


def test_the_default_targets_build_only_what_a_node_or_a_developer_runs():
    targets = {(t.accelerator, t.arch) for t in load_config(ctx()).pipeline.targets}
    assert targets == {("cuda", "amd64"), ("neuron", "amd64"), ("cpu", "amd64"), ("cpu", "arm64")}
