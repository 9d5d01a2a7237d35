"""CLI/env settings and model-derived defaults (including few-step models configured by hints alone)."""
from __future__ import annotations

import argparse
import json

import pytest

from serving.model.config import ModelConfigError, model_defaults, read_hints
from serving.core.settings import Settings, SettingsError, add_serve_arguments, settings_from


def parse(argv: list[str], env: dict[str, str] | None = None) -> Settings:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return settings_from(parser.parse_args(argv), env or {})


def test_contract_defaults():
    s = parse(["--model", "/opt/model"])
    assert (s.device, s.host, s.port, s.metrics_port) == ("auto", "0.0.0.0", 8080, 9090)
    assert (s.max_queue, s.max_concurrency, s.request_timeout, s.drain_timeout) == (8, 1, 30.0, 30.0)
    assert not s.skip_warmup and not s.log_prompts and s.dtype == "auto"


def test_every_option_reads_its_env_var_and_the_flag_wins():
    env = {
        "SERVING_MODEL": "/opt/model", "SERVING_DEVICE": "cpu", "SERVING_PORT": "9000", "SERVING_MAX_QUEUE": "3",
        "SERVING_REQUEST_TIMEOUT": "2.5", "SERVING_SKIP_WARMUP": "true", "SERVING_LOG_PROMPTS": "0",
        "SERVING_INVENTORY_SERVICE": "edge", "SERVING_DEEPCACHE_INTERVAL": "3",
    }
    s = parse(["--port", "9100"], env)
    assert s.model == "/opt/model" and s.device == "cpu" and s.port == 9100 and s.max_queue == 3
    assert s.request_timeout == 2.5 and s.skip_warmup is True and s.log_prompts is False
    assert s.inventory_service == "edge" and s.deepcache_interval == 3


def test_warmup_sizes_parse():
    assert parse(["--model", "m", "--warmup-sizes", "512x512, 768x512"]).warmup_shapes == [(512, 512), (768, 512)]
    assert parse(["--model", "m"]).warmup_shapes == []


def test_every_settings_field_has_a_flag():
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    flags = {a.dest for a in parser._actions}
    for name in ("model", "device", "host", "port", "metrics_port", "api_key_file", "api_key_secret_arn", "max_queue",
                 "max_concurrency", "request_timeout", "drain_timeout", "skip_warmup", "log_prompts", "dtype", "compile",
                 "cuda_graphs", "tiny_vae", "deepcache_interval", "inventory_service", "inventory_namespace"):
        assert name in flags


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        ([], {}, "--model (env SERVING_MODEL)"),
        (["--model", "m", "--max-concurrency", "0"], {}, "--max-concurrency (env SERVING_MAX_CONCURRENCY)"),
        (["--model", "m", "--request-timeout", "0"], {}, "--request-timeout"),
        (["--model", "m", "--port", "9090"], {}, "--metrics-port"),
        (["--model", "m", "--api-key-file", "f", "--api-key-secret-arn", "arn:aws:x"], {}, "not both"),
        (["--model", "m", "--api-key-secret-arn", "my-secret"], {}, "Secrets Manager ARN"),
        (["--model", "m", "--max-image-size", "100"], {}, "--max-image-size"),
        (["--model", "m", "--default-steps", "99"], {}, "--default-steps"),
        (["--model", "m"], {"SERVING_MAX_QUEUE": "lots"}, "SERVING_MAX_QUEUE: expected int"),
        (["--model", "m"], {"SERVING_SKIP_WARMUP": "maybe"}, "SERVING_SKIP_WARMUP"),
        (["--model", "m"], {"SERVING_DEVICE": "tpu"}, "--device (env SERVING_DEVICE)"),
        (["--model", "m", "--warmup-sizes", "512"], {}, "--warmup-sizes"),
        (["--model", "m", "--warmup-sizes", "512x500"], {}, "--warmup-sizes"),
        (["--model", "m", "--max-streams", "-1"], {}, "--max-streams"),
        (["--model", "m", "--stream-idle-timeout", "0"], {}, "--stream-idle-timeout"),
        (["--model", "m", "--max-frame-bytes", "10"], {}, "--max-frame-bytes"),
        (["--model", "m", "--stream-warmup-size", "512x512,256x256"], {}, "--stream-warmup-size"),
        (["--model", "m", "--stream-warmup-size", "500x512"], {}, "--stream-warmup-size"),
    ],
)
def test_bad_settings_name_the_flag(argv, env, needle):
    with pytest.raises(SettingsError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        parse(argv, env)


def test_model_defaults_come_from_serving_json(tiny_model):
    d = model_defaults(tiny_model, Settings(model=str(tiny_model)))
    assert (d.width, d.height, d.steps, d.guidance_scale) == (64, 64, 2, 0.0)


def test_sd_turbo_works_by_configuration_alone(tmp_path, tiny_model):
    """A few-step checkpoint needs only serving.json (1 step, guidance 0, its scheduler) - no code change."""
    model = tmp_path / "turbo"
    model.mkdir()
    for sub in ("unet", "vae"):
        (model / sub).mkdir()
        (model / sub / "config.json").write_text((tiny_model / sub / "config.json").read_text())
    (model / "serving.json").write_text(json.dumps(
        {"default_steps": 1, "default_guidance_scale": 0.0, "scheduler": "EulerAncestralDiscreteScheduler"}))
    d = model_defaults(model, Settings(model=str(model)))
    assert (d.steps, d.guidance_scale, d.scheduler) == (1, 0.0, "EulerAncestralDiscreteScheduler")
    # No hint for the size: the UNet sample size x VAE scale (8 x 2^3) gives the native resolution.
    assert (d.width, d.height) == (64, 64)
    # Flags still override the model.
    d = model_defaults(model, Settings(model=str(model), default_steps=4, default_guidance_scale=1.5))
    assert (d.steps, d.guidance_scale) == (4, 1.5)


def test_builtin_defaults_without_hints(tmp_path):
    (tmp_path / "serving.json").write_text("{}")
    d = model_defaults(tmp_path, Settings(model=str(tmp_path)))
    assert (d.width, d.height, d.steps, d.guidance_scale) == (512, 512, 25, 7.5)


@pytest.mark.parametrize(
    ("hints", "needle"),
    [({"default_step": 2}, "unknown key 'default_step'"), ({"default_steps": "2"}, "default_steps has the wrong type")],
)
def test_bad_hints_are_rejected(tmp_path, hints, needle):
    (tmp_path / "serving.json").write_text(json.dumps(hints))
    with pytest.raises(ModelConfigError, match=needle):
        read_hints(tmp_path)


def test_default_size_outside_bounds_is_an_error(tiny_model):
    with pytest.raises(ModelConfigError, match="--default-width"):
        model_defaults(tiny_model, Settings(model=str(tiny_model), min_image_size=128))


# -- the command line ----------------------------------------------------------------------------------------
def test_serve_without_model_exits_2_naming_the_flag(capsys, monkeypatch):
    from serving.__main__ import main

    monkeypatch.delenv("SERVING_MODEL", raising=False)
    assert main(["serve"]) == 2
    assert "--model (env SERVING_MODEL)" in capsys.readouterr().err


def test_serve_with_unreadable_key_file_exits_2(capsys, tmp_path):
    from serving.__main__ import main

    assert main(["serve", "--model", str(tmp_path), "--api-key-file", str(tmp_path / "nope")]) == 2
    assert "--api-key-file" in capsys.readouterr().err


def test_tiny_model_subcommand(tmp_path, capsys):
    from serving.__main__ import main

    assert main(["tiny-model", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "model_index.json").is_file()
    assert json.loads((tmp_path / "m" / "serving.json").read_text())["default_steps"] == 2
    assert (tmp_path / "m" / "tokenizer" / "tokenizer.json").is_file()


def test_bench_subcommand_delegates_its_arguments(monkeypatch):
    import sys
    import types

    from serving import __main__ as cli

    seen = {}
    fake_bench = types.ModuleType("loadtest.bench")
    fake_bench.main = lambda argv: seen.setdefault("bench", argv) and 0
    monkeypatch.setitem(sys.modules, "loadtest.bench", fake_bench)
    assert cli.main(["bench", "--url", "http://127.0.0.1:1", "--count", "3"]) == 0
    assert seen == {"bench": ["--url", "http://127.0.0.1:1", "--count", "3"]}


def test_compile_flags_read_env_and_validate():
    s = parse(["--model", "m", "--compile"], {"SERVING_COMPILE_MODE": "reduce-overhead",
                                              "SERVING_COMPILE_CACHE_DIR": "/var/cache/edge",
                                              "SERVING_COMPILE_CACHE_S3": "s3://edge-cache/compile/"})
    assert (s.compile_mode, s.compile_cache_dir, s.compile_cache_s3) == \
        ("reduce-overhead", "/var/cache/edge", "s3://edge-cache/compile/")
    assert parse(["--model", "m", "--compile", "--compile-mode", "default"]).compile_mode == "default"
    assert parse(["--model", "m"]).compile_mode is None


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["--model", "m", "--compile-mode", "default"], {}, "--compile-mode (env SERVING_COMPILE_MODE): only applies"),
        (["--model", "m", "--compile"], {"SERVING_COMPILE_MODE": "fast"}, "--compile-mode (env SERVING_COMPILE_MODE): "
                                                                          "must be one of"),
        (["--model", "m", "--compile-cache-s3", "https://bucket/x"], {}, "--compile-cache-s3 (env SERVING_COMPILE_"),
        (["--model", "m", "--compile-cache-dir", " "], {}, "--compile-cache-dir (env SERVING_COMPILE_CACHE_DIR)"),
    ],
)
def test_bad_compile_settings_name_the_flag(argv, env, needle):
    with pytest.raises(SettingsError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        parse(argv, env)
