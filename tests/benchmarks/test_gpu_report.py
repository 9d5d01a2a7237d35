"""benchmarks.gpu_report: the closing table against the targets, from synthetic phase JSON."""
from __future__ import annotations

import json

import pytest

from benchmarks import gpu_report


def _write(directory, name, data):
    (directory / name).write_text(json.dumps(data))


def _pipelines():
    rows = []
    for variant, exact, scale in (("baseline", True, 1.0), ("fast", True, 0.4), ("tiny-vae", False, 0.3)):
        for steps, cfg, base in ((25, True, 500.0), (1, False, 40.0)):
            rows.append({"variant": variant, "exact": exact, "size": 512, "steps": steps, "cfg": cfg,
                         "p50_ms": base * scale, "first_call_ms": base * scale * 3, "fraction_of_peak": 0.2,
                         "mean_abs_diff_vs_baseline": None if variant == "baseline" else 0.5 * scale})
    return {"smoke": False, "gpu": "NVIDIA H200", "cases": [{"size": 512, "steps": 25, "cfg": True},
                                                            {"size": 512, "steps": 1, "cfg": False}],
            "rows": rows, "versions": {"gpu": "NVIDIA H200", "torch": "2.11.0+cu130", "diffusers": "0.42.1"},
            "variants": {"fast": {"load_s": 3.0, "warmup_s": 40.0, "settings": {"compile": True}}},
            "errors": [{"variant": "deepcache", "stage": "load", "error": "ValueError: cannot combine"}]}


def _e2e(p50_25, p50_1):
    return {"smoke": False, "ready_s": 50.0, "requests": 20, "rows": [
        {"size": 512, "steps": 25, "cfg": True, "http_p50_ms": p50_25, "inference_p50_ms": p50_25 - 2,
         "first_request": {"ms": 9000.0}, "failed": 0},
        {"size": 512, "steps": 1, "cfg": False, "http_p50_ms": p50_1, "first_request": {"ms": 30.0, "error": "504"},
         "failed": 1}]}


def _warmstart(p50_25, p50_1):
    return {**_e2e(p50_25, p50_1), "ready_s": 12.0, "compile_cache": {"files": 9, "mib": 80.0},
            "startup": [{"msg": "fast shapes warmed", "seconds": {"512x512 cfg n=1": 0.4}}]}


def test_every_target_is_judged_with_its_gap(tmp_path):
    _write(tmp_path, "pipelines.json", _pipelines())
    _write(tmp_path, "warmstart.json", _warmstart(p50_25=250.0, p50_1=15.0))
    _write(tmp_path, "stream-nvidia-h200.json", {"summary": {"closed_loop_fps": 80.0}})
    rows = {r[0]: r[1:] for r in gpu_report.target_rows(gpu_report.load_results(tmp_path))}
    assert rows["in-process fast path p50, 25 steps with CFG"] == ("200.00 ms", "<= 200 ms", "met", "1.00")
    assert rows["in-process fast path p50, 1 step no CFG"] == ("16.00 ms", "<= 20 ms", "met", "0.80")
    assert rows["in-process fast path p50, 1 step, tiny VAE"] == ("12.00 ms", "<= 10 ms", "MISSED", "1.20")
    assert rows["HTTP p50 (compiled server), 25 steps with CFG"] == ("250.00 ms", "<= 200 ms", "MISSED", "1.25")
    assert rows["HTTP p50 (compiled server), 1 step no CFG"] == ("15.00 ms", "<= 20 ms", "met", "0.75")
    assert rows["fast / baseline, 25 steps CFG"] == ("2.50 x", ">= 2 x", "met", "0.80")
    assert rows["one stream, closed loop"] == ("80.00 fps", ">= 60 fps", "met", "0.75")
    assert rows["start to /readyz, warm compile cache"] == ("12.00 s", "<= 30 s", "met", "0.40")


def test_an_empty_directory_measures_nothing(tmp_path):
    text = gpu_report.render(gpu_report.load_results(tmp_path))
    assert text.count("not measured") == len(gpu_report.TARGETS)
    assert "no phase recorded them" in text


def test_versions_come_first_even_when_no_phase_ran(tmp_path):
    _write(tmp_path, "versions.json", {"gpu": "NVIDIA H100 80GB HBM3", "torch": "2.11.0+cu130"})
    assert gpu_report.render(gpu_report.load_results(tmp_path)).startswith(
        "versions: gpu NVIDIA H100 80GB HBM3, torch 2.11.0+cu130")


def test_render_shows_versions_phases_details_and_errors(tmp_path):
    _write(tmp_path, "pipelines.json", _pipelines())
    _write(tmp_path, "e2e.json", _e2e(p50_25=150.0, p50_1=25.0))
    _write(tmp_path, "stream-nvidia-h200.json", {"summary": {"frame": "512x512 jpeg", "closed_loop_fps": 80.0,
                                                             "target_fps": 60.0, "open_loop_delivered_fps": 75.0}})
    (tmp_path / "warmstart.json").write_text("{")
    phases = tmp_path / "phases.tsv"
    phases.write_text("prepare\t0\t20\t45\ne2e\t124\t130\t130\nstream\tskipped\t0\t0\npipelines\t1\t3\t110\n")
    text = gpu_report.render(gpu_report.load_results(tmp_path), phases)
    assert text.startswith("versions: gpu NVIDIA H200, torch 2.11.0+cu130")
    assert "server settings: exactly the nvidia pods' (rendered chart)" in text
    assert "SMOKE" not in text
    for fragment in ("e2e           TIMED OUT", "stream        SKIPPED (deadline)", "pipelines     FAILED (exit 1)",
                     "prepare       ok", "first request 30.0 ms ERROR", "tiny-vae  25 st CFG",
                     "server overhead 2.0 ms", "closed loop 80.0 fps",
                     "ERROR pipelines: deepcache load: ValueError: cannot combine",
                     "ERROR warmstart: warmstart.json: invalid JSON", "fast: load 3.0 s, warm-up 40.0 s"):
        assert fragment in text, fragment


def test_the_warm_start_shows_its_per_shape_seconds(tmp_path):
    _write(tmp_path, "warmstart.json", _warmstart(p50_25=150.0, p50_1=15.0))
    assert "shapes at start: {'512x512 cfg n=1': 0.4}" in gpu_report.render(gpu_report.load_results(tmp_path))


@pytest.mark.parametrize(("value", "expected"), [(None, ("not measured", "")), (200.0, ("met", "1.00")),
                                                 (200.1, ("MISSED", "1.00")), (400.0, ("MISSED", "2.00"))])
def test_verdict_at_the_limit(value, expected):
    assert gpu_report.verdict(gpu_report.TARGETS["http_25_cfg"], value) == expected


def test_speedup_gap_is_target_over_measured():
    assert gpu_report.verdict(gpu_report.TARGETS["speedup"], 1.6) == ("MISSED", "1.25")
    assert gpu_report.verdict(gpu_report.TARGETS["speedup"], 0.0) == ("MISSED", "inf")


def test_main_writes_the_table(tmp_path, capsys):
    _write(tmp_path, "e2e.json", {**_e2e(100.0, 10.0), "smoke": True})
    assert gpu_report.main([str(tmp_path), "--write", str(tmp_path / "report.txt")]) == 0
    assert capsys.readouterr().out == (tmp_path / "report.txt").read_text()
    assert "SMOKE RUN" in (tmp_path / "report.txt").read_text()


def test_deviations_from_the_pods_are_named(tmp_path):
    _write(tmp_path, "e2e.json", {**_e2e(100.0, 10.0), "pod_deviations": {
        "SERVING_COMPILE_MODE": {"pod": "max-autotune-no-cudagraphs", "run": "default"}}})
    _write(tmp_path, "warmstart.json", {"ready_s": 5.0, "pod_deviations": {"SERVING_MAX_IMAGES": {"pod": "4",
                                                                                                  "run": "1"}}})
    text = gpu_report.render(gpu_report.load_results(tmp_path))
    assert ("server settings differing from the nvidia pods': SERVING_COMPILE_MODE default (pods: "
            "max-autotune-no-cudagraphs), SERVING_MAX_IMAGES 1 (pods: 4)") in text
