"""benchmarks.gpu: the --smoke run on CPU (same code paths as the GPU run) and its pure helpers."""
from __future__ import annotations

import json

import pytest

from benchmarks import gpu


@pytest.mark.slow
def test_smoke_run_writes_results_plot_and_e2e(tmp_path):
    assert gpu.main(["--smoke", "--steps", "2", "--iters", "1", "--warmup", "0", "--e2e", "--e2e-requests", "1",
                     "--out", str(tmp_path)]) == 0
    [json_path] = tmp_path.glob("smoke-*.json")
    assert json_path.with_suffix(".png").stat().st_size > 1000
    result = json.loads(json_path.read_text())
    assert result["smoke"] is True and result["device"] == "cpu" and result["arch"] == "tiny"
    assert result["peak_bf16_dense_tflops"] is None
    rows = result["results"]
    assert {r["variant"] for r in rows} == set(gpu.SMOKE_VARIANTS)
    assert {(r["steps"], r["cfg"]) for r in rows} == {(2, False), (2, True)}
    for row in rows:
        assert row["p50_ms"] > 0 and row["min_ms"] <= row["p50_ms"] <= row["p90_ms"]
        assert row["tflop"] > 0 and row["achieved_tflops"] > 0 and row["fraction_of_peak"] is None
        assert (row["options"] is None) == (row["variant"] == "diffusers")
    assert len(result["summary"]) == 2
    for case in result["summary"]:
        assert case["speedup_exact"] == pytest.approx(case["baseline_p50_ms"] / case["best_exact_p50_ms"], rel=1e-2)
        assert case["best_exact_variant"] in {"diffusers", "eager"}  # deepcache is approximate
    e2e = result["e2e"]
    assert e2e["ready_s"] > 0 and len(e2e["cases"]) == 2
    assert all(case["http_p50_ms"] > 0 for case in e2e["cases"])


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
    assert gpu.peak_bf16_tflops(name) == (model, peak)


def test_server_flags_mirror_the_options():
    from serving.optimize import CudaOptions

    assert gpu.server_flags(None) == []
    assert gpu.server_flags(CudaOptions(compile=True, cuda_graphs=True)) == \
        ["--dtype", "float16", "--compile", "--cuda-graphs"]
    assert gpu.server_flags(CudaOptions(dtype="bfloat16", tiny_vae="/opt/taesd", deepcache_interval=3)) == \
        ["--dtype", "bfloat16", "--tiny-vae", "/opt/taesd", "--deepcache-interval", "3"]


def test_every_variant_has_valid_options():
    for name in gpu.VARIANTS:
        options = gpu.variant_options(name, "float16", "/opt/taesd")
        assert (options is None) == (name == "diffusers")


def test_summary_picks_exact_and_approximate_winners():
    rows = [
        {"variant": "diffusers", "exact": True, "size": 512, "steps": 4, "cfg": False, "p50_ms": 100.0,
         "fraction_of_peak": 0.1},
        {"variant": "compile", "exact": True, "size": 512, "steps": 4, "cfg": False, "p50_ms": 40.0,
         "fraction_of_peak": 0.25},
        {"variant": "deepcache", "exact": False, "size": 512, "steps": 4, "cfg": False, "p50_ms": 25.0,
         "fraction_of_peak": 0.4},
    ]
    [case] = gpu.summarize(rows)
    assert (case["best_exact_variant"], case["speedup_exact"]) == ("compile", 2.5)
    assert (case["best_variant"], case["speedup_best"]) == ("deepcache", 4.0)


def test_bad_arguments_are_explained(capsys):
    with pytest.raises(SystemExit):
        gpu.main(["--variants", "warp-speed"])
    assert "unknown variant(s) ['warp-speed']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu.main(["--steps", "0"])
    assert "positive integers" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="variant 'cuda-graphs' needs a CUDA device"):
        gpu.main(["--smoke", "--variants", "cuda-graphs"])
    assert gpu.build_parser().parse_args(["--variants", "eager"]).variants == ["diffusers", "eager"]


def test_without_a_gpu_the_full_run_says_how_to_proceed(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA device.*--smoke"):
        gpu.main([])
