"""`make dashboard-preview`: the synthesized dashboard body drawn with the committed benchmark results."""
from __future__ import annotations

from tools.dashboard_body import dashboard_body
from tools.dashboard_preview import RESULTS, _painter, load_results, render


def test_renders_the_synthesized_layout_with_the_committed_results(templates, tmp_path):
    body = dashboard_body(templates["OperationsStack"], region="us-west-2")
    data = load_results(RESULTS)
    out = tmp_path / "preview.png"
    render(body, data, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    titles = [w["properties"].get("title", "") for w in body["widgets"]]
    filled = [t for t in titles if _painter(t, data) is not None]
    # The panels a CPU run measures are filled from benchmarks/results/, the rest are marked cluster-only.
    assert any(t.startswith("Latency p50/p99") for t in filled)
    assert {"Requests/s by route and zone", "Server resident memory per pod (bytes)"} <= set(filled)
    assert not any(_painter(t, data) for t in titles if "Container Insights" in t)


def test_missing_results_leave_panels_cluster_only(templates, tmp_path):
    body = dashboard_body(templates["OperationsStack"], region="us-west-2")
    out = tmp_path / "preview.png"
    render(body, load_results(tmp_path), out)
    assert out.stat().st_size > 0
    assert all(_painter(w["properties"].get("title", ""), load_results(tmp_path)) is None for w in body["widgets"])
