"""The nvidia inference pod's server configuration, taken from the rendered chart, for the GPU benchmark.

The benchmark machine has no cdk8s (nor Node), so the pod's settings are rendered here, before the trip:

    python -m benchmarks.podenv --out .whl/nvidia-pod.json     # part of `make gpu-wheels`

and the GPU phases read that file. What it holds: the serving container's env and args from the Deployment that
`charts/inference.py` renders with the repository's configuration (`tools.image_pod.rendered_deployment`, as
`make image-test` uses), minus what needs a cluster or a network (`STANDALONE_OVERRIDES`); the device stays the
pod's. The benchmark adds only the model path, the ports, `--warmup-sizes` for its shape and, for the cold-start
phase, its own `--compile-cache-dir`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.gpu_common import ResultFile

DEFAULT_PATH = Path(".whl") / "nvidia-pod.json"
API_KEY_ENV_FILE = "SERVING_API_KEY_FILE"
# Values that need the cluster (Secrets Manager, the Kubernetes API, the cert-manager Secret) or the network (S3);
# None removes the variable. The API key comes from a file the benchmark writes, so auth stays on as in the pod.
STANDALONE_OVERRIDES: dict[str, str | None] = {
    "SERVING_API_KEY_SECRET_ARN": None,
    "SERVING_INVENTORY_SERVICE": None,
    "SERVING_INVENTORY_NAMESPACE": None,
    "SERVING_INVENTORY_NODE_PORT": None,
    "SERVING_TLS_CERT_FILE": None,
    "SERVING_TLS_KEY_FILE": None,
    "SERVING_TLS_CA_FILE": None,
    "SERVING_TLS_SERVER_NAME": None,
    "SERVING_COMPILE_CACHE_S3": None,
    # WebRTC advertises the node's ExternalIP, read through the Kubernetes API by the pod's node name.
    "SERVING_WEBRTC_PUBLIC_HOST": None,
    "NODE_NAME": None,
}
# Set by the benchmark per run (the flags win over the env anyway; removed so the file shows only pod settings).
BENCHMARK_OWNED = ("SERVING_MODEL", "SERVING_PORT", "SERVING_METRICS_PORT", "SERVING_HOST")


class PodEnvError(ValueError):
    """The pod file is missing or malformed."""


def render(accelerator: str = "nvidia") -> dict[str, Any]:
    """The pod's server env and args, rendered from the chart with the repository's configuration."""
    from tools.image_pod import rendered_deployment

    deployment = rendered_deployment(accelerator)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    if "command" in container:
        raise PodEnvError(f"the {accelerator} Deployment replaces the image's ENTRYPOINT (command "
                          f"{container['command']!r}); the benchmark runs `python -m serving serve` with its args")
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" not in item and item["name"] not in STANDALONE_OVERRIDES:
            raise PodEnvError(f"env {item['name']} takes its value from the cluster (valueFrom); add it to "
                              "benchmarks.podenv.STANDALONE_OVERRIDES")
        env[item["name"]] = item.get("value", "")
    removed = sorted(name for name in env if name in STANDALONE_OVERRIDES or name in BENCHMARK_OWNED)
    for name in removed:
        env.pop(name)
    for name, value in STANDALONE_OVERRIDES.items():
        if value is not None:
            env[name] = value
    return {"accelerator": accelerator, "image": container.get("image"), "env": env,
            "args": list(container.get("args", [])), "removed_for_standalone_run": removed}


def load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise PodEnvError(f"{path}: no rendered pod settings; run `make gpu-wheels` (it renders them with the "
                          "wheels) and carry .whl")
    try:
        pod = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PodEnvError(f"{path}: invalid JSON ({exc}); rerun `make gpu-wheels`") from None
    if not isinstance(pod, dict) or not isinstance(pod.get("env"), dict) or not isinstance(pod.get("args"), list):
        raise PodEnvError(f"{path}: expected an object with 'env' (object) and 'args' (list); rerun `make gpu-wheels`")
    bad = [k for k, v in pod["env"].items() if not isinstance(v, str)]
    if bad:
        raise PodEnvError(f"{path}: env values must be strings: {', '.join(sorted(bad))}")
    return pod


def server_env(pod: dict[str, Any], api_key_file: Path | None = None, **extra: str) -> dict[str, str]:
    """The server subprocess's environment additions: the pod's env, the API key file, `extra`."""
    env = dict(pod["env"])
    if api_key_file is not None:
        env[API_KEY_ENV_FILE] = str(api_key_file)
    env.update(extra)
    return env


def settings(pod: dict[str, Any], model: Path, device: str, warmup_size: int, **overrides: Any):
    """The serving Settings a pod builds from this env and args, for `model` on `device`: what the in-process
    phase hands to serving.backends.create_backend, so it loads exactly what the server would."""
    from serving.core.settings import add_serve_arguments, settings_from

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(list(pod["args"]))
    environ = {**{k: v for k, v in pod["env"].items() if k.startswith("SERVING_")},
               "SERVING_MODEL": str(model), "SERVING_DEVICE": device,
               "SERVING_WARMUP_SIZES": f"{warmup_size}x{warmup_size}"}
    environ.pop(API_KEY_ENV_FILE, None)
    values = {**vars(args), **{k: v for k, v in overrides.items()}}
    return settings_from(values, environ)


def with_changes(pod: dict[str, Any], changes: list[str]) -> dict[str, Any]:
    """The pod with SERVING_NAME=VALUE env changes applied (an empty VALUE removes the variable), each recorded
    under "deviations" as {"pod": the pod's value, "run": the value used}, so every result names them."""
    env, deviations = dict(pod["env"]), dict(pod.get("deviations") or {})
    for change in changes:
        name, sep, value = change.partition("=")
        if not sep or not name.startswith("SERVING_") or not name[8:].replace("_", "").isalnum():
            raise PodEnvError(f"--set {change!r}: expected SERVING_NAME=VALUE (an empty VALUE unsets it)")
        deviations[name] = {"pod": pod["env"].get(name), "run": value or None}
        if value:
            env[name] = value
        else:
            env.pop(name, None)
    return {**pod, "env": env, "deviations": deviations}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.podenv", description=__doc__.split("\n\n")[0])
    parser.add_argument("--accelerator", default="nvidia")
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--from", dest="source", type=Path, default=None,
                        help="start from this rendered file instead of rendering the chart")
    parser.add_argument("--set", dest="changes", action="append", default=[], metavar="SERVING_NAME=VALUE",
                        help="change one pod env variable for this run (recorded as a deviation)")
    args = parser.parse_args(argv)
    try:
        pod = with_changes(load(args.source) if args.source else render(args.accelerator), args.changes)
    except PodEnvError as exc:
        raise SystemExit(f"benchmarks.podenv: {exc}") from None
    pod.pop("date", None)
    result = ResultFile(args.out, pod)
    print(f"wrote {result.path}: {len(pod['env'])} env variables, args {pod['args']}"
          + "".join(f"; {k} {v['run']} (pod: {v['pod']})" for k, v in pod["deviations"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
