"""Run the built image the way the inference pod runs it, and check the image contract (``make image-test``).

What comes from where:
- the process: the image's ENTRYPOINT/CMD joined with the ``command``/``args`` of the rendered inference
  Deployment, with Kubernetes' rules (``command`` replaces ENTRYPOINT, ``args`` replaces CMD);
- user, group, supplementary group (``fsGroup``), read-only root, the writable emptyDir mounts, the HTTP port,
  the readiness path and the startup budget: the rendered Deployment (``charts/inference.py``, synthesized
  standalone with the repository's default configuration, as tests/charts does);
- environment: the image's, then the Deployment's values, except the few that need a cluster
  (``LOCAL_OVERRIDES``): the CPU image serves on ``cpu``, the API key comes from a file in /tmp instead of
  Secrets Manager, and the endpoint inventory (Kubernetes API) is off.

The sandbox (``tools.image_sandbox``) is a private mount and network namespace: the image's root filesystem
read-only, tmpfs at every emptyDir mount, /proc, a minimal /dev with a 64 MiB /dev/shm as a container runtime
gives, loopback only. Two diagnostics are added to the pod's process and change nothing it does:
``PYTHONVERBOSE=1`` (Python reports every module it compiles from source instead of loading its .pyc) and
strace, which records any file-system change attempted outside the writable mounts (it fails with EROFS).

The run fails when the image's USER is root, the process does not run as the Deployment's uid, /readyz is not
200 within the startup probe's budget, one /generate does not return a PNG, the server writes (or tries to)
outside /tmp, any module it imported lacks valid bytecode in the image, or it does not exit 0 on SIGTERM.

CLI: ``python -m tools.image_pod [--image REF] [--report FILE]`` (root: it mounts and chroots).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

from tools.image_build import CACHE_DIR, IMAGE, REPO_ROOT, buildah

API_KEY = "image-test-key-0123456789abcdef"
API_KEY_PATH = "/tmp/image-test-api-key"
# Deployment env that needs a cluster, and what a local run uses instead (None: unset).
LOCAL_OVERRIDES: dict[str, str | None] = {
    "SERVING_DEVICE": "cpu",
    "SERVING_API_KEY_SECRET_ARN": None,
    "SERVING_API_KEY_FILE": API_KEY_PATH,
    "SERVING_INVENTORY_SERVICE": None,
    "SERVING_INVENTORY_NAMESPACE": None,
    "SERVING_INVENTORY_NODE_PORT": None,
    # The serving Secret comes from cert-manager in the cluster; the local run serves plain HTTP.
    "SERVING_TLS_CERT_FILE": None,
    "SERVING_TLS_KEY_FILE": None,
    "SERVING_TLS_CA_FILE": None,
    "SERVING_TLS_SERVER_NAME": None,
    # The nvidia pod's GPU fast path: compiling its warm-up shapes, CUDA graphs and the compile caches (one in the
    # cluster's S3 bucket) need a GPU; the local run on cpu warms the model's own size.
    "SERVING_COMPILE": None,
    "SERVING_COMPILE_MODE": None,
    "SERVING_CUDA_GRAPHS": None,
    "SERVING_WARMUP_SIZES": None,
    "SERVING_COMPILE_CACHE_DIR": None,
    "SERVING_COMPILE_CACHE_S3": None,
    # WebRTC advertises the node's ExternalIP, looked up by the pod's node name through the inventory.
    "SERVING_WEBRTC_PUBLIC_HOST": None,
    "NODE_NAME": None,
}
DIAGNOSTIC_ENV = {"PYTHONVERBOSE": "1"}
_COMPILED_FROM_SOURCE = re.compile(r"^# code object from '?([^']+\.py)'?$")


def rendered_deployment(accelerator: str | None = None) -> dict:
    """The inference Deployment as the chart renders it with the repository's default configuration."""
    import cdk8s

    import edge_config
    from charts.inference import InferenceChart

    context = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    config = edge_config.load_config(context)
    chosen = accelerator or config.accelerators[0]
    chart = InferenceChart(
        cdk8s.App(), "inference", workloads=config.workloads, accelerators=config.accelerators,
        images={acc: f"local/edge-diffusion-{acc}:image-test" for acc in config.accelerators},
        service_account_name="inference",
        api_key_secret_arn="arn:aws:secretsmanager:us-west-2:111122223333:secret:image-test-AbCdEf",
        region=config.region, autoscaler_namespace="keda", tls=config.tls,
        compile_cache_bucket="image-test-compile-cache")
    deployments = [o for o in chart.to_json() if o["kind"] == "Deployment"
                   and o["spec"]["template"]["metadata"]["labels"].get("edge-diffusion.aws/accelerator") == chosen]
    if len(deployments) != 1:
        raise RuntimeError(f"expected one inference Deployment for {chosen}, found {len(deployments)}")
    return deployments[0]


def pod_argv(image_config: dict, container: dict) -> list[str]:
    """Kubernetes' rule: ``command`` replaces the ENTRYPOINT (and drops CMD); ``args`` replaces CMD."""
    if "command" in container:
        return [*container["command"], *container.get("args", [])]
    return [*(image_config.get("Entrypoint") or []), *container.get("args", image_config.get("Cmd") or [])]


def pod_env(image_config: dict, container: dict) -> dict[str, str]:
    env = dict(item.split("=", 1) for item in image_config.get("Env") or [])
    for item in container.get("env", []):
        if "value" not in item and item["name"] not in LOCAL_OVERRIDES:
            raise ValueError(f"env {item['name']} takes its value from the cluster (valueFrom); add it to "
                             "LOCAL_OVERRIDES with a local value")
        env[item["name"]] = item.get("value", "")
    for name, value in LOCAL_OVERRIDES.items():
        env.pop(name, None)
        if value is not None:
            env[name] = value
    return env


def is_root_user(user: str) -> bool:
    """An image USER that runs as root: empty (the default), uid 0 or the name root."""
    name = user.split(":", 1)[0]
    return name in ("", "0", "root")


# Kubernetes quantity suffixes; tmpfs's size= knows only k, m and g (powers of 1024), so sizes go to it in bytes.
_QUANTITY_SUFFIXES = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
                      "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity_bytes(quantity: str) -> int:
    """Bytes of a Kubernetes storage quantity such as ``4Gi``, ``4096Mi`` or ``500M``."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(quantity))
    if not match:
        raise ValueError(f"sizeLimit: {quantity!r} is not a Kubernetes quantity this tool understands (e.g. 4Gi)")
    return int(float(match.group(1)) * _QUANTITY_SUFFIXES[match.group(2) or ""])


def pod_spec(image_config: dict, deployment: dict) -> dict:
    """Everything the sandbox needs to start the container as the kubelet would."""
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    writable = []
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            limit = volume["emptyDir"].get("sizeLimit")
            writable.append({"path": mount["mountPath"], "size": quantity_bytes(limit) if limit else None})
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    readiness = container["readinessProbe"]["httpGet"]
    startup = container["startupProbe"]
    env = pod_env(image_config, container)
    return {
        "argv": pod_argv(image_config, container),
        "env": {**env, **DIAGNOSTIC_ENV},
        "workdir": image_config.get("WorkingDir") or "/",
        "uid": security["runAsUser"], "gid": security["runAsGroup"],
        "groups": [pod["securityContext"]["fsGroup"]] if "fsGroup" in pod.get("securityContext", {}) else [],
        "read_only_root": security.get("readOnlyRootFilesystem", False),
        "no_new_privs": security.get("allowPrivilegeEscalation") is False,
        "writable": writable,
        "port": ports[readiness["port"]] if isinstance(readiness["port"], str) else readiness["port"],
        "readiness_path": readiness["path"],
        "startup_budget_s": startup["periodSeconds"] * startup["failureThreshold"],
        "drain_s": int(env.get("SERVING_DRAIN_TIMEOUT", "30")),
        "api_key": API_KEY, "api_key_path": API_KEY_PATH,
    }


def _log_entries(stderr_text: str) -> list[tuple[str, dict | None]]:
    """Each stderr line with its JSON log entry (None for a raw line the interpreter wrote before logging was up)."""
    parsed = []
    for line in stderr_text.splitlines():
        entry = None
        if line.startswith("{"):
            try:
                entry = json.loads(line)
            except ValueError:
                pass
        parsed.append((line, entry if isinstance(entry, dict) else None))
    return parsed


def compiled_from_source(stderr_text: str) -> list[str]:
    """Modules Python had to compile at run time (PYTHONVERBOSE): no .pyc in the image, or a stale one. Once the
    server's logging is up it carries the interpreter's stderr as JSON entries of logger "stderr"."""
    lines = []
    for line, entry in _log_entries(stderr_text):
        if entry is None:
            lines.append(line)
        elif entry.get("logger") == "stderr":
            lines.extend(str(entry.get("msg", "")).splitlines())
    return sorted({m.group(1) for m in map(_COMPILED_FROM_SOURCE.match, map(str.strip, lines)) if m})


def load_failures(stderr_text: str) -> list[str]:
    """The reason the server gave for a failed model load (the last line of its logged exception)."""
    reasons = []
    for _, entry in _log_entries(stderr_text):
        if entry and entry.get("msg") == "model load failed":
            trace = str(entry.get("exc") or "").strip().splitlines()
            reasons.append(trace[-1] if trace else entry["msg"])
    return reasons


def read_only_violations(strace_text: str) -> list[str]:
    """File-system changes the server attempted outside its writable mounts (refused with EROFS)."""
    return sorted({line.split(" ", 1)[-1].strip() for line in strace_text.splitlines() if "EROFS" in line})


def image_config(ref: str) -> dict:
    inspected = json.loads(subprocess.run(buildah("inspect", "--type", "image", ref), capture_output=True,
                                          text=True, check=True).stdout)
    return inspected["OCIv1"]["config"]


def run(ref: str, report_path: Path) -> int:
    from tools import image_sandbox

    config = image_config(ref)
    problems = []
    if is_root_user(config.get("User", "")):
        problems.append(f"the image's USER is {config.get('User')!r}: it would run as root")
    spec = pod_spec(config, rendered_deployment())
    if not spec["read_only_root"]:
        problems.append("the Deployment does not set readOnlyRootFilesystem")
    work = CACHE_DIR / "pod"
    result = image_sandbox.run_pod(ref, spec, work)
    problems += result.pop("problems")
    stderr_text = result.pop("stderr")
    problems += [f"the model failed to load: {reason}" for reason in load_failures(stderr_text)]
    sources = compiled_from_source(stderr_text)
    if sources:
        problems.append(f"{len(sources)} imported modules have no valid bytecode in the image: "
                        + ", ".join(sources[:20]))
    writes = read_only_violations(result.pop("strace"))
    if writes:
        problems.append(f"{len(writes)} writes outside the writable mounts: " + "; ".join(writes[:20]))
    report = {"image": ref, "argv": spec["argv"], "uid": spec["uid"], "image_user": config.get("User"),
              "writable": spec["writable"], "modules_without_bytecode": sources, "read_only_violations": writes,
              **result, "problems": problems}
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k not in ("modules_without_bytecode",)}, indent=2))
    if problems:
        print("image-test FAILED:\n- " + "\n- ".join(problems), file=sys.stderr)
        return 1
    print(f"image-test passed: {' '.join(spec['argv'])} as uid {spec['uid']}, read-only root, "
          f"{result['modules_loaded_from_bytecode']} modules from bytecode, 0 from source")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=IMAGE)
    parser.add_argument("--report", type=Path, default=CACHE_DIR / "image-test.json")
    args = parser.parse_args(argv)
    return run(args.image, args.report)


if __name__ == "__main__":
    sys.exit(main())
