"""benchmarks.podenv: the nvidia pod's server settings, rendered from the chart, for the GPU benchmark."""
from __future__ import annotations

import json

import pytest

from benchmarks import podenv


def test_rendered_pod_keeps_the_pods_settings_and_drops_the_cluster(nvidia_pod):
    pod = podenv.load(nvidia_pod)
    env = pod["env"]
    assert env["SERVING_DEVICE"] == "cuda"
    assert env["SERVING_MAX_CONCURRENCY"] and env["SERVING_REQUEST_TIMEOUT"]
    for name in ("SERVING_API_KEY_SECRET_ARN", "SERVING_INVENTORY_SERVICE", "SERVING_TLS_CERT_FILE",
                 "SERVING_PORT", "SERVING_METRICS_PORT", "SERVING_COMPILE_CACHE_S3"):
        assert name not in env
    assert "SERVING_API_KEY_SECRET_ARN" in pod["removed_for_standalone_run"]
    assert isinstance(pod["args"], list)


def test_settings_are_the_pods_with_the_benchmarks_model_device_and_shape(nvidia_pod, tmp_path):
    pod = podenv.load(nvidia_pod)
    settings = podenv.settings(pod, tmp_path / "ckpt", "cpu", 512, tiny_vae="/opt/taesd")
    assert settings.model == str(tmp_path / "ckpt") and settings.device == "cpu"
    assert settings.warmup_shapes == [(512, 512)] and settings.tiny_vae == "/opt/taesd"
    assert settings.max_concurrency == int(pod["env"]["SERVING_MAX_CONCURRENCY"])
    assert settings.api_key_secret_arn is None and settings.tls_cert_file is None


def test_pod_args_are_parsed_as_serve_flags(tmp_path):
    pod = {"env": {"SERVING_MAX_QUEUE": "3"}, "args": ["--max-concurrency", "2", "--dtype", "bfloat16"]}
    settings = podenv.settings(pod, tmp_path, "cuda", 768)
    assert (settings.max_concurrency, settings.dtype, settings.max_queue) == (2, "bfloat16", 3)
    assert settings.warmup_shapes == [(768, 768)]


def test_server_env_adds_the_key_file_and_extras(tmp_path):
    pod = {"env": {"SERVING_MAX_QUEUE": "3"}, "args": []}
    env = podenv.server_env(pod, tmp_path / "key", TMPDIR="/x")
    assert env == {"SERVING_MAX_QUEUE": "3", "SERVING_API_KEY_FILE": str(tmp_path / "key"), "TMPDIR": "/x"}
    assert podenv.server_env(pod) == {"SERVING_MAX_QUEUE": "3"}


def test_load_explains_what_is_wrong(tmp_path):
    with pytest.raises(podenv.PodEnvError, match="make gpu-wheels"):
        podenv.load(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(podenv.PodEnvError, match="invalid JSON"):
        podenv.load(bad)
    bad.write_text(json.dumps({"env": [], "args": []}))
    with pytest.raises(podenv.PodEnvError, match="'env' \\(object\\)"):
        podenv.load(bad)
    bad.write_text(json.dumps({"env": {"SERVING_MAX_QUEUE": 3}, "args": []}))
    with pytest.raises(podenv.PodEnvError, match="must be strings: SERVING_MAX_QUEUE"):
        podenv.load(bad)


def _deployment(container: dict) -> dict:
    return {"spec": {"template": {"spec": {"containers": [container]}}}}


def test_render_refuses_what_a_standalone_run_cannot_reproduce(monkeypatch):
    import tools.image_pod

    monkeypatch.setattr(tools.image_pod, "rendered_deployment", lambda accelerator: _deployment(
        {"env": [{"name": "SERVING_X", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]}))
    with pytest.raises(podenv.PodEnvError, match="SERVING_X takes its value from the cluster"):
        podenv.render()
    monkeypatch.setattr(tools.image_pod, "rendered_deployment", lambda accelerator: _deployment(
        {"command": ["sh"], "env": []}))
    with pytest.raises(podenv.PodEnvError, match="replaces the image's ENTRYPOINT"):
        podenv.render()
    monkeypatch.setattr(tools.image_pod, "rendered_deployment", lambda accelerator: _deployment(
        {"args": ["--compile"], "env": [{"name": "SERVING_COMPILE_CACHE_S3", "value": "s3://b/p/"},
                                        {"name": "SERVING_COMPILE", "value": "1"}]}))
    pod = podenv.render()
    assert pod["env"] == {"SERVING_COMPILE": "1"} and pod["args"] == ["--compile"]
    assert pod["removed_for_standalone_run"] == ["SERVING_COMPILE_CACHE_S3"]


def test_changes_are_applied_and_recorded_as_deviations():
    pod = {"env": {"SERVING_COMPILE_MODE": "max-autotune-no-cudagraphs", "SERVING_MAX_IMAGES": "4"}, "args": []}
    run = podenv.with_changes(pod, ["SERVING_COMPILE_MODE=default", "SERVING_MAX_IMAGES=", "SERVING_DTYPE=bfloat16"])
    assert run["env"] == {"SERVING_COMPILE_MODE": "default", "SERVING_DTYPE": "bfloat16"}
    assert run["deviations"] == {"SERVING_COMPILE_MODE": {"pod": "max-autotune-no-cudagraphs", "run": "default"},
                                 "SERVING_MAX_IMAGES": {"pod": "4", "run": None},
                                 "SERVING_DTYPE": {"pod": None, "run": "bfloat16"}}
    assert pod["env"]["SERVING_MAX_IMAGES"] == "4"  # the rendered pod itself is untouched
    assert podenv.with_changes(pod, [])["deviations"] == {}
    for bad in ("COMPILE_MODE=default", "SERVING_COMPILE_MODE", "SERVING_A B=1"):
        with pytest.raises(podenv.PodEnvError, match="expected SERVING_NAME=VALUE"):
            podenv.with_changes(pod, [bad])


def test_main_derives_a_run_file_from_a_rendered_one(tmp_path, capsys):
    source = tmp_path / "pod.json"
    source.write_text(json.dumps({"env": {"SERVING_MAX_IMAGES": "4"}, "args": ["--compile"]}))
    assert podenv.main(["--from", str(source), "--set", "SERVING_MAX_IMAGES=1", "--out", str(tmp_path / "run.json")]) == 0
    run = podenv.load(tmp_path / "run.json")
    assert run["env"] == {"SERVING_MAX_IMAGES": "1"} and run["args"] == ["--compile"]
    assert "SERVING_MAX_IMAGES 1 (pod: 4)" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="expected SERVING_NAME=VALUE"):
        podenv.main(["--from", str(source), "--set", "X=1", "--out", str(tmp_path / "bad.json")])
