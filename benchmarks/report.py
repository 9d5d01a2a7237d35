"""The CPU benchmark's output: machine description, the printed table and the PNG plot."""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

TARGET_HTTP_OVERHEAD_MS = 3.0
TARGET_COLD_START_RATIO = 1.5


def machine() -> dict[str, Any]:
    import torch

    # Other work on a shared machine moves every number here; the load average says how much there was.
    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "load_average_1m_at_start": round(os.getloadavg()[0], 2),
            "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
            "torch": torch.__version__}


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def print_table(result: dict[str, Any]) -> None:
    ph = result.get("cold_start_phases_s", {})
    profile = result.get("import_profile", {})
    rows = [
        ("HTTP overhead p50", f"{result['http_overhead_ms_p50']:.2f} ms",
         f"<= {TARGET_HTTP_OVERHEAD_MS} ms", result["http_overhead_ms_p50"] <= TARGET_HTTP_OVERHEAD_MS),
        ("  paired p50", f"{result['http_overhead_paired_ms_p50']:.2f} ms", "", None),
        ("  outside inference p50", f"{result['http_overhead_outside_inference_ms_p50']:.2f} ms", "", None),
        ("  through HTTP p50", f"{result['http_p50_ms']:.2f} ms", "", None),
        ("  direct call p50", f"{result['direct_p50_ms']:.2f} ms", "", None),
        ("cold cache: to /readyz", _s(result["cold_start_cold_cache_ready_s"]), "", None),
        ("  raw read of weights", _s(result["cold_start_cold_cache_raw_read_s"]), "", None),
        ("  ratio", f"{result['cold_start_cold_cache_ratio']:.2f}x", f"<= {TARGET_COLD_START_RATIO}x",
         result["cold_start_cold_cache_ratio"] <= TARGET_COLD_START_RATIO),
        ("  phase: server up", _s(ph.get("server_up_s")), "since spawn", None),
        ("  phase: imports", _s(ph.get("imports_s")), "", None),
        ("  phase: weight read", _s(ph.get("weight_read_s")), "overlaps", None),
        ("  phase: pipeline build", _s(ph.get("pipeline_build_s")), "", None),
        ("  phase: warm-up", _s(result.get("cold_start_warmup_s")),
         f"{result['cold_start_warmup_shape']['size']}", None),
        ("warm cache: to /readyz", _s(result["cold_start_ready_s"]), "", None),
        ("  raw read of weights", _s(result["cold_start_raw_read_s"]), "", None),
        ("  ratio", f"{result['cold_start_ratio']:.2f}x", f"<= {TARGET_COLD_START_RATIO}x",
         result["cold_start_ratio"] <= TARGET_COLD_START_RATIO),
        ("imports, fresh interpreter", _s(result["cold_start_imports_s"]), "", None),
        ("  torch._dynamo deferrable", str(profile.get("dynamo_deferrable_without_patching")), "", None),
        ("synth", f"{result['synth_s']:.1f} s" if result.get("synth_s") is not None else "skipped", "", None),
    ]
    print(f"\n{'measure':<28}{'value':>12}  {'target':<12}")
    for name, value, target, ok in rows:
        verdict = "" if ok is None else ("met" if ok else "MISSED")
        print(f"{name:<28}{value:>12}  {target:<12} {verdict}")


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    axes[0].bar(["direct", "HTTP"], [result["direct_p50_ms"], result["http_p50_ms"]], color=["#888", "#2a7"])
    axes[0].set_ylabel("p50 ms")
    axes[0].set_title(f"{result['overhead_shape']['width']}px, {result['overhead_shape']['steps']} steps: "
                      f"+{result['http_overhead_ms_p50']:.2f} ms")
    ph = result["cold_start_phases_s"]
    ready = result["cold_start_cold_cache_ready_s"]
    server_up = min(ph.get("server_up_s") or 0.0, ready)
    imports = min(ph.get("imports_s") or 0.0, ready - server_up)
    build = min(ph.get("pipeline_build_s") or 0.0, ready - server_up - imports)
    ax = axes[1]
    ax.bar(["raw read\nwarm", "raw read\ncold"], [result["cold_start_raw_read_s"],
                                                 result["cold_start_cold_cache_raw_read_s"]], color="#888")
    ax.bar(["ready\nwarm"], [result["cold_start_ready_s"]], color="#27a")
    bottom = 0.0
    for label, value, color in (("server up", server_up, "#c84"), ("imports", imports, "#a55"),
                                ("pipeline build", build, "#27a"), ("rest", ready - server_up - imports - build,
                                                                    "#6a6")):
        ax.bar(["ready\ncold"], [max(value, 0.0)], bottom=[bottom], color=color, label=label)
        bottom += max(value, 0.0)
    ax.legend(fontsize=7)
    ax.set_ylabel("seconds")
    ax.set_title(f"cold cache {result['cold_start_cold_cache_ratio']:.1f}x, warm {result['cold_start_ratio']:.1f}x")
    synth = result.get("synth_s")
    axes[2].bar(["cdk synth"], [synth or 0.0], color="#a72")
    axes[2].set_ylabel("seconds")
    axes[2].set_title("synth" if synth is not None else "synth (skipped)")
    fig.suptitle(f"edge-diffusion CPU benchmark - {result['date'][:10]}, {result['machine']['cpus']} CPUs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
