"""benchmarks.gpu and benchmarks.gpu_common: the pipelines phase's helpers (the whole phase runs in the
device_check.sh smoke test)."""
from __future__ import annotations

import json

import pytest

from benchmarks import gpu, gpu_common
from benchmarks.gpu_common import Case


@pytest.mark.parametrize(
    ("name", "model", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM", 989.4),
        ("NVIDIA H100 PCIe", "H100 PCIe", 756.5),
        ("NVIDIA H100 NVL", "H100 NVL", 835.5),
        ("NVIDIA H200", "H200 SXM", 989.4),
        ("NVIDIA A100-SXM4-80GB", "A100", 312.0),
        ("NVIDIA L4", "L4", 121.0),
        ("NVIDIA A10G", "A10G", 70.0),
        ("NVIDIA L40S", None, None),
        ("Tesla T4", None, None),
    ],
)
def test_peak_table(name, model, peak):
    assert gpu_common.peak_bf16_tflops(name) == (model, peak)


def test_cases_put_the_target_cases_first():
    cases = gpu_common.cases(512, [1, 4, 25], [True, False])
    assert cases[:2] == [Case(512, 25, True), Case(512, 1, False)]
    assert len(cases) == len(set(cases)) == 6
    assert gpu_common.cases(512, [4], [False]) == [Case(512, 4, False)]


def test_case_request_body_matches_the_guidance_setting():
    assert Case(512, 25, True).request_body(seed=3) == {
        "prompt": gpu_common.PROMPT, "width": 512, "height": 512, "num_inference_steps": 25,
        "guidance_scale": gpu_common.CFG_SCALE, "seed": 3, "negative_prompt": ""}
    body = Case(512, 1, False).request_body()
    assert body["guidance_scale"] == 0.0 and "negative_prompt" not in body
    assert Case(512, 1, False).label == "512px 1 step no CFG"


def test_result_file_is_complete_json_after_every_change(tmp_path):
    result = gpu_common.ResultFile(tmp_path / "sub" / "phase.json", {"phase": "x"})
    assert json.loads(result.path.read_text())["phase"] == "x"
    result.append("rows", {"p50_ms": 1.0})
    result.append("rows", {"p50_ms": 2.0})
    result.set(ready_s=3.5)
    data = json.loads(result.path.read_text())
    assert [r["p50_ms"] for r in data["rows"]] == [1.0, 2.0] and data["ready_s"] == 3.5 and "date" in data
    assert [p.name for p in result.path.parent.iterdir()] == ["phase.json"]  # no temporary file left


def test_latency_stats():
    assert gpu_common.latency_stats([5.0, 1.0, 3.0, 2.0, 4.0]) == {"p50_ms": 3.0, "p90_ms": 5.0, "min_ms": 1.0,
                                                                  "iters": 5}


def test_mean_abs_diff_is_in_uint8_levels():
    from PIL import Image

    black, grey = Image.new("RGB", (8, 8), (0, 0, 0)), Image.new("RGB", (8, 8), (10, 20, 30))
    assert gpu.mean_abs_diff(grey, black) == 20.0
    assert gpu.mean_abs_diff(black, black) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        gpu.mean_abs_diff(Image.new("RGB", (4, 4)), black)


def test_time_case_reports_the_first_call_apart_and_keeps_the_seed_0_image():
    seeds = []

    def generate(case, seed):
        seeds.append(seed)
        return f"image-{seed}"

    stats, image = gpu.time_case(generate, Case(64, 1, False), "cpu", warmup=2, iters=3)
    assert seeds == [0, 1, 2, 3, 4] and image == "image-0"
    assert stats["iters"] == 3 and stats["first_call_ms"] >= 0


def test_variants_baseline_always_included_and_named_variants_only(capsys):
    assert gpu.build_parser().parse_args(["--out", "x", "--variants", "fast"]).variants == ["baseline", "fast"]
    with pytest.raises(SystemExit):
        gpu.build_parser().parse_args(["--out", "x", "--variants", "warp-speed"])
    assert "unknown variant(s) ['warp-speed']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu.build_parser().parse_args(["--out", "x", "--steps", "0"])
    assert "positive integers" in capsys.readouterr().err
    assert [v.exact for v in gpu.VARIANTS.values()] == [True, True, False, False]


def test_approximate_variants_add_one_server_setting():
    models = gpu_common.ModelFiles(checkpoint="/m/ckpt", tiny_vae="/m/taesd", arch="sd21")
    assert gpu.VARIANTS["fast"].overrides(models) == {}
    assert gpu.VARIANTS["tiny-vae"].overrides(models) == {"tiny_vae": "/m/taesd"}
    assert gpu.VARIANTS["deepcache"].overrides(models) == {"deepcache_interval": 3}
    assert gpu.VARIANTS["baseline"].overrides is None


def test_without_a_gpu_the_full_run_says_how_to_proceed(monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA device.*--smoke"):
        gpu.main(["--out", str(tmp_path)])


def test_a_missing_pod_file_names_the_make_target(tmp_path):
    with pytest.raises(SystemExit, match="make gpu-wheels"):
        gpu.main(["--smoke", "--out", str(tmp_path), "--pod", str(tmp_path / "absent.json")])


def test_the_device_run_measures_baseline_fast_and_the_one_step_tiny_vae_case():
    assert gpu.DEFAULT_VARIANTS == ["baseline", "fast", "tiny-vae"]
    args = gpu.build_parser().parse_args(["--out", "x"])
    matrix = gpu.matrix(args)
    assert {(c.steps, c.cfg) for c in matrix} == {(1, True), (1, False), (25, True), (25, False)}
    assert all(c.size == 512 for c in matrix)
    assert gpu.VARIANTS["fast"].cases(matrix) == matrix
    assert gpu.VARIANTS["tiny-vae"].cases(matrix) == [Case(512, 1, False)]


def test_every_compiled_variant_compiles_its_own_graphs(monkeypatch, tmp_path, nvidia_pod):
    """A variant sealed after its warm-up (Dynamo stance eager_on_recompile, as the server seals) must not leave the
    next variant running eagerly under a compiled label. Each variant here is the server's shape policy around a
    small module compiled with Dynamo's eager backend; Dynamo's counters, recorded per variant, say what compiled."""
    import torch
    from PIL import Image

    from serving.backends.cuda.shapes import EAGER, FAST, RECORD, ShapePolicy

    def image(case):
        return Image.new("RGB", (case.size, case.size), (127, 127, 127))

    def server_path(settings, cases=None):
        policy = ShapePolicy(EAGER)
        module = torch.nn.Linear(4, 4)
        gate = policy.gate("unet", torch.compile(module, backend="eager", fullgraph=True, dynamic=False), module)
        with policy.using(RECORD):  # the warm-up
            gate(torch.ones(1, 4))
        policy.seal()

        def generate(case, seed):
            with policy.using(FAST) as missed:
                gate(torch.ones(1, 4))
            assert not missed
            return image(case)

        return generate, {"backend": "cuda"}  # the server's cuda backend, as far as the phase can tell

    monkeypatch.setattr(gpu_common, "ensure_models", lambda work, smoke: gpu_common.ModelFiles(
        tmp_path / "ckpt", tmp_path / "taesd", "tiny"))
    monkeypatch.setattr(gpu, "load_baseline", lambda models, device: (lambda case, seed: image(case), {}))
    monkeypatch.setattr(gpu, "load_server_path", server_path)
    torch._dynamo.reset()
    try:
        gpu.main(["--smoke", "--out", str(tmp_path), "--pod", str(nvidia_pod), "--iters", "2", "--cfg", "off",
                  "--variants", "fast,tiny-vae,deepcache"])
    finally:
        torch.compiler.set_stance("default")
        torch._dynamo.reset()
    data = json.loads((tmp_path / "pipelines.json").read_text())
    assert data["errors"] == []
    compiled = {name: v["graphs_compiled"] for name, v in data["variants"].items()}
    assert compiled["baseline"] == {"warmup": 0, "requests": 0}
    for name in ("fast", "tiny-vae", "deepcache"):
        assert compiled[name] == {"warmup": 1, "requests": 0}, compiled  # nothing compiles at request time
