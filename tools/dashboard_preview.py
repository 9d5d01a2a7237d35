"""`make dashboard-preview`: the serving dashboard's layout, drawn with the latest CPU benchmark and soak data.

The layout (every widget's position, size and title) is read from the synthesized OperationsStack, so the picture
is the dashboard CloudWatch will show. Panels a CPU run can measure are filled from benchmarks/results/ (cpu.json,
stream-cpu.json, soak-cpu.json): request rates, answers by status, latency percentiles, stream frame rates and
drops, refusals and the server's memory. The rest only exist in a cluster and say so.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "benchmarks" / "results"
ROW_INCHES, COL_INCHES = 0.42, 0.78


def load_results(results: Path) -> dict[str, Any]:
    out = {}
    for name in ("cpu", "stream-cpu", "soak-cpu"):
        path = results / f"{name}.json"
        out[name] = json.loads(path.read_text()) if path.is_file() else None
    return out


def synthesized_body() -> dict:
    import aws_cdk as cdk  # noqa: F401 - imported before app so jsii starts once

    from app import build_app
    from edge_config import load_config
    from tools.dashboard_body import dashboard_body

    with tempfile.TemporaryDirectory() as out:
        assembly = build_app(outdir=out).synth()
        template = assembly.get_stack_by_name("OperationsStack").template
    config = load_config(json.loads((REPO_ROOT / "cdk.json").read_text())["context"])
    return dashboard_body(template, region=config.region)


# ---------------------------------------------------------------- panel painters (one per kind of widget)


def _bars(ax, labels: list[str], values: list[float], unit: str, source: str) -> None:
    ax.bar(labels, values, color="#1f77b4")
    ax.set_ylabel(unit, fontsize=7)
    ax.tick_params(labelsize=7)
    _source(ax, source)


def _source(ax, text: str) -> None:
    ax.text(0.99, 0.97, text, transform=ax.transAxes, ha="right", va="top", fontsize=6, color="#555555")


def _cluster_only(ax, why: str) -> None:
    ax.set_axis_off()
    ax.text(0.5, 0.5, f"cluster only\n{why}", ha="center", va="center", fontsize=7, color="#777777",
            transform=ax.transAxes)


def _painter(title: str, data: dict[str, Any]) -> Callable | None:
    soak, stream = data.get("soak-cpu"), data.get("stream-cpu")
    cpu = data.get("cpu")
    t = title.lower()
    if soak and t.startswith("requests/s"):
        routes = [r for r in ("generate", "openai") if r in soak["classes"]]
        return lambda ax: _bars(ax, routes, [soak["classes"][r]["count"] / soak["wall_s"] for r in routes],
                                "requests/s", f"soak-cpu: {soak['requests']} requests, {soak['concurrency']} clients")
    if soak and t.startswith("answers/s"):
        counts: dict[str, int] = {}
        for cls in soak["classes"].values():
            for status, n in cls["statuses"].items():
                key = "499 (client left)" if status == "None" else status
                counts[key] = counts.get(key, 0) + n
        keys = sorted(counts)
        return lambda ax: _bars(ax, keys, [counts[k] / soak["wall_s"] for k in keys], "answers/s", "soak-cpu")
    if soak and t.startswith("latency p50/p99"):
        def latency(ax):
            routes = [r for r in ("generate", "openai") if r in soak["classes"]]
            xs = range(len(routes))
            ax.bar([x - 0.2 for x in xs], [soak["classes"][r]["p50_ms"] / 1000 for r in routes], 0.4, label="p50")
            ax.bar([x + 0.2 for x in xs], [soak["classes"][r]["p99_ms"] / 1000 for r in routes], 0.4, label="p99")
            ax.set_xticks(list(xs), routes)
            ax.set_ylabel("seconds", fontsize=7)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=6, loc="upper left")
            extra = f"; cpu.json p50 {cpu['http_p50_ms']:.0f} ms (64x64, 2 steps)" if cpu else ""
            _source(ax, f"soak-cpu, 12 clients{extra}")
        return latency
    if stream and t.startswith("stream frames/s"):
        s = stream["summary"]
        return lambda ax: _bars(ax, ["closed loop fps", "open loop fps", "dropped/s"],
                                [s["closed_loop_fps"], s["open_loop_delivered_fps"],
                                 s["open_loop_target_fps"] * s["open_loop_dropped_fraction"]],
                                "frames/s", f"stream-cpu: {s['frame']}, offered {s['open_loop_target_fps']} fps")
    if stream and t.startswith("active streams"):
        runs = stream["runs"]
        names = list(runs)
        return lambda ax: _bars(ax, names, [runs[n]["config"]["streams"] for n in names], "streams", "stream-cpu")
    if soak and t.startswith("refusals"):
        bad = soak["classes"].get("bad", {}).get("statuses", {})
        keys = [k for k in ("401", "413", "429", "503") if k in bad]
        return lambda ax: _bars(ax, keys, [bad[k] for k in keys], "answers (whole run)", "soak-cpu")
    if soak and t.startswith("server resident memory"):
        def memory(ax):
            peaks = [kib / 1024 for kib in soak["rss_kib_peak_by_quarter"]]
            ax.plot(range(1, len(peaks) + 1), peaks, marker="o")
            ax.set_xticks(range(1, len(peaks) + 1), [f"Q{i}" for i in range(1, len(peaks) + 1)])
            ax.set_ylabel("MiB (peak)", fontsize=7)
            ax.tick_params(labelsize=7)
            _source(ax, "soak-cpu, peak RSS per quarter")
        return memory
    return None


_CLUSTER_ONLY = {
    "queue wait": "per-bucket queue-wait counts from every pod",
    "queue depth": "queued and running generations per zone",
    "ready endpoints": "ready pods per Local Zone",
    "compile fallbacks": "cuda fast path and accelerator errors",
    "nodes per nodepool": "Karpenter's node count per pool",
    "gpu": "Container Insights on GPU nodes",
    "neuroncore": "Container Insights on Inferentia2 nodes",
    "certificate": "cert-manager's leaf on each pod",
    "image pipeline": "EventBridge matches of the pipeline's runs",
}


def render(body: dict, data: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(w["y"] + w["height"] for w in body["widgets"])
    fig = plt.figure(figsize=(24 * COL_INCHES, rows * ROW_INCHES))
    for widget in body["widgets"]:
        x, y, w, h = widget["x"], widget["y"], widget["width"], widget["height"]
        # Axes in figure fractions; CloudWatch's y grows downwards. Leave room for the title and tick labels.
        rect = [(x + 0.6) / 24, 1 - (y + h - 0.55) / rows, (w - 0.85) / 24, (h - 1.5) / rows]
        props = widget["properties"]
        if widget["type"] == "text":
            ax = fig.add_axes([x / 24, 1 - (y + h) / rows, w / 24, h / rows])
            ax.set_axis_off()
            ax.text(0.005, 0.5, props["markdown"].replace("# ", "").replace("`", ""), fontsize=8, va="center",
                    wrap=True)
            continue
        ax = fig.add_axes(rect)
        title = props.get("title", "")
        ax.set_title(title, fontsize=8, loc="left")
        if widget["type"] == "alarm":
            ax.set_axis_off()
            names = ", ".join(a.strip("<>").split(".")[0].removeprefix("Alarms") for a in props["alarms"])
            ax.text(0, 0.5, f"{len(props['alarms'])} alarms: {names}", fontsize=6, va="center", wrap=True)
            continue
        painter = _painter(title, data)
        if painter is not None:
            painter(ax)
            continue
        why = next((v for k, v in _CLUSTER_ONLY.items() if k in title.lower()), "no CPU benchmark equivalent")
        _cluster_only(ax, why)
    fig.suptitle("edge-diffusion serving dashboard: layout from the synthesized OperationsStack, CPU benchmark data "
                 "where a CPU run measures it", fontsize=9, y=0.999)
    tmp = out.with_suffix(".png.tmp")
    fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    os.replace(tmp, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=RESULTS / "dashboard-preview.png")
    args = parser.parse_args(argv)
    render(synthesized_body(), load_results(args.results), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
