"""tools/image_pod.py: the pod's process, user and file system come from the rendered Deployment."""
from __future__ import annotations

import json

import pytest

from charts import contract as inference
from tests.buildspecs.dockerfile_parser import parse_dockerfile
from tools import image_build, image_pod

IMAGE_CONFIG = {
    "User": "10001:10001",
    "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "SERVING_MODEL=/opt/model", "SERVING_DEVICE=cpu", "HOME=/tmp"],
    "Entrypoint": json.loads(parse_dockerfile(image_build.DOCKERFILE.read_text()).stage("cpu").all("ENTRYPOINT")[0]
                             .args),
    "WorkingDir": "/app",
}


@pytest.fixture(scope="module")
def deployment():
    return image_pod.rendered_deployment()


def test_the_pod_runs_the_image_entrypoint_joined_with_the_deployment(deployment):
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    argv = image_pod.pod_argv(IMAGE_CONFIG, container)
    assert argv == [*IMAGE_CONFIG["Entrypoint"], *container.get("args", [])]
    assert argv.count("serve") == 1, f"the subcommand must appear once: {argv}"


def test_kubernetes_command_and_args_rules():
    image = {"Entrypoint": ["python", "-m", "serving", "serve"], "Cmd": ["--help"]}
    assert image_pod.pod_argv(image, {}) == ["python", "-m", "serving", "serve", "--help"]
    assert image_pod.pod_argv(image, {"args": ["--port", "1"]}) == ["python", "-m", "serving", "serve", "--port", "1"]
    assert image_pod.pod_argv(image, {"command": ["sh"]}) == ["sh"]
    assert image_pod.pod_argv(image, {"command": ["sh"], "args": ["-c", "x"]}) == ["sh", "-c", "x"]
    # The first version's defect: args ["serve"] after an ENTRYPOINT that already says serve.
    assert image_pod.pod_argv(image, {"args": ["serve"]}).count("serve") == 2


def test_the_spec_takes_user_file_system_and_probes_from_the_chart(deployment):
    spec = image_pod.pod_spec(IMAGE_CONFIG, deployment)
    assert spec["uid"] == spec["gid"] == inference.RUN_AS_UID == 10001
    assert spec["groups"] == [10001]
    assert spec["read_only_root"] and spec["no_new_privs"]
    assert [w["path"] for w in spec["writable"]] == [inference.SCRATCH_DIR] == ["/tmp"]
    # In bytes: tmpfs's size= does not parse Kubernetes suffixes such as the chart's "4096Mi".
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if "emptyDir" in v]
    assert spec["writable"][0]["size"] == image_pod.quantity_bytes(volume["emptyDir"]["sizeLimit"]) > 0
    assert spec["port"] == inference.HTTP_PORT and spec["readiness_path"] == inference.READINESS_PATH
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    probe = container["startupProbe"]
    assert spec["startup_budget_s"] == probe["periodSeconds"] * probe["failureThreshold"]
    assert spec["api_key_path"].startswith(inference.SCRATCH_DIR + "/")


@pytest.mark.parametrize(("quantity", "size"), [("4Gi", 4 * 2**30), ("4096Mi", 4 * 2**30), ("500M", 500 * 10**6),
                                               ("1.5Gi", 3 * 2**29), ("1024", 1024)])
def test_storage_quantities_become_bytes(quantity, size):
    assert image_pod.quantity_bytes(quantity) == size


def test_unknown_quantities_name_the_field():
    with pytest.raises(ValueError, match="sizeLimit"):
        image_pod.quantity_bytes("4 gigs")


def test_the_env_is_the_deployments_except_what_needs_a_cluster(deployment):
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = image_pod.pod_env(IMAGE_CONFIG, container)
    rendered = {e["name"]: e.get("value") for e in container["env"]}
    for name, value in rendered.items():
        if name not in image_pod.LOCAL_OVERRIDES:
            assert env[name] == value
    assert env["SERVING_DEVICE"] == "cpu" and env["SERVING_API_KEY_FILE"] == image_pod.API_KEY_PATH
    assert not any(name.startswith("SERVING_INVENTORY") or name == "SERVING_API_KEY_SECRET_ARN" for name in env)
    assert "NODE_NAME" not in env and "SERVING_WEBRTC_PUBLIC_HOST" not in env
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin" and env["SERVING_MODEL"] == "/opt/model"
    with pytest.raises(ValueError, match="SECRET_THING"):
        image_pod.pod_env(IMAGE_CONFIG, {"env": [{"name": "SECRET_THING", "valueFrom": {"secretKeyRef": {}}}]})


@pytest.mark.parametrize("user, root", [("", True), ("0", True), ("root", True), ("0:0", True),
                                        ("10001:10001", False), ("serving", False)])
def test_root_images_are_recognised(user, root):
    assert image_pod.is_root_user(user) is root


def test_modules_compiled_at_run_time_are_found():
    stderr = "\n".join([
        "# /usr/lib/python3.11/__pycache__/os.cpython-311.pyc matches /usr/lib/python3.11/os.py",
        "# code object from '/usr/lib/python3.11/__pycache__/os.cpython-311.pyc'",
        "# code object from '/app/serving/settings.py'",
        "# bytecode is stale for 'serving.core.settings'",
        '{"level": "info", "msg": "ready"}',
        "# code object from '/app/serving/settings.py'",
        # Once logging is configured, the server's JSON logger carries what the interpreter writes to stderr.
        json.dumps({"level": "warning", "logger": "stderr", "msg": "# code object from '/app/serving/engine.py'"}),
        json.dumps({"level": "info", "logger": "serving", "msg": "# code object from '/app/not/stderr.py'"}),
    ])
    assert image_pod.compiled_from_source(stderr) == ["/app/serving/engine.py", "/app/serving/settings.py"]


def test_a_failed_model_load_names_its_reason():
    stderr = "\n".join([
        "# code object from '/usr/lib/python3.11/__pycache__/os.cpython-311.pyc'",
        json.dumps({"level": "error", "msg": "model load failed",
                    "exc": "Traceback (most recent call last):\n  ...\nPermissionError: [Errno 13] Permission denied: "
                           "'/opt/model/vae/diffusion_pytorch_model.safetensors'"}),
        json.dumps({"level": "info", "msg": "exit"}),
    ])
    assert image_pod.load_failures(stderr) == [
        "PermissionError: [Errno 13] Permission denied: '/opt/model/vae/diffusion_pytorch_model.safetensors'"]
    assert image_pod.load_failures('{"msg": "ready"}') == []


def test_writes_refused_by_the_read_only_root_are_found():
    strace = "\n".join([
        '12 openat(AT_FDCWD, "/usr/lib/x", O_RDONLY) = -1 ENOENT (No such file or directory)',
        '12 mkdir("/var/cache/x", 0777) = -1 EROFS (Read-only file system)',
        '13 openat(AT_FDCWD, "/app/x.pyc", O_WRONLY|O_CREAT, 0666) = -1 EROFS (Read-only file system)',
    ])
    assert image_pod.read_only_violations(strace) == [
        'mkdir("/var/cache/x", 0777) = -1 EROFS (Read-only file system)',
        'openat(AT_FDCWD, "/app/x.pyc", O_WRONLY|O_CREAT, 0666) = -1 EROFS (Read-only file system)',
    ]
