"""The device check's closing table: what the phases measured, side by side with the targets (issue 14).

    python -m benchmarks.gpu_report DIR        # reads DIR/{versions,pipelines,e2e,warmstart,stream-*}.json

A phase that did not run or did not finish shows as "not measured"; nothing is filled in from elsewhere. The gap
column is measured / target for latency targets and target / measured for the speed-up, so above 1.0 means short
of the target by that factor.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Target:
    name: str
    limit: float
    unit: str
    at_most: bool  # True: measured <= limit meets it; False: measured >= limit


TARGETS = {
    "fast_25_cfg": Target("fast path p50, 25 steps with CFG", 200.0, "ms", at_most=True),
    "fast_1": Target("fast path p50, 1 step", 20.0, "ms", at_most=True),
    "fast_1_tiny_vae": Target("fast path p50, 1 step, tiny VAE", 10.0, "ms", at_most=True),
    "http_25_cfg": Target("HTTP p50, 25 steps with CFG", 200.0, "ms", at_most=True),
    "http_1": Target("HTTP p50, 1 step", 20.0, "ms", at_most=True),
    "speedup": Target("fast path / baseline", 2.0, "x", at_most=False),
    "stream_fps": Target("one stream, closed loop", 60.0, "fps", at_most=False),
    "warm_start": Target("start with a warm compile cache", 30.0, "s", at_most=True),
}
PHASE_FILES = ("versions.json", "pipelines.json", "e2e.json", "warmstart.json")


def load_results(directory: Path) -> dict[str, dict[str, Any]]:
    """Each phase's JSON by file stem; unreadable files are reported as such, not skipped silently."""
    found: dict[str, dict[str, Any]] = {}
    for path in [directory / name for name in PHASE_FILES] + sorted(directory.glob("stream-*.json")):
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            data = {"error": f"{path.name}: invalid JSON ({exc})"}
        key = "stream" if path.name.startswith("stream-") else path.stem
        # versions.json is the versions themselves (written first, before any phase ran).
        found[key] = {"versions": data} if key == "versions" and "error" not in data else data
    return found


def _row(rows: list[dict[str, Any]], steps: int, cfg: bool, **match: Any) -> dict[str, Any] | None:
    for row in rows:
        if row.get("steps") == steps and row.get("cfg") == cfg and all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def _span(*datas: dict[str, Any]) -> tuple[int, int]:
    """(fewest, most) steps among the rows of these results; (1, 25) when none has rows."""
    steps = sorted({r["steps"] for d in datas for r in d.get("rows") or [] if "steps" in r})
    return (steps[0], steps[-1]) if steps else (1, 25)


def verdict(target: Target, value: float | None) -> tuple[str, str]:
    """(verdict, gap) for one measured value."""
    if value is None:
        return "not measured", ""
    met = value <= target.limit if target.at_most else value >= target.limit
    gap = value / target.limit if target.at_most else (target.limit / value if value else float("inf"))
    return ("met" if met else "MISSED"), f"{gap:.2f}"


def _steps_label(steps: int) -> str:
    return f"{steps} step{'s' if steps > 1 else ''}"


def target_rows(results: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str, str]]:
    """(what, measured, target, verdict, gap) per target; the speed-up once per case of the pipelines phase."""
    out: list[tuple[str, str, str, str, str]] = []

    def add(key: str, label: str, value: float | None) -> None:
        target = TARGETS[key]
        word, gap = verdict(target, value)
        shown = "-" if value is None else f"{value:.2f} {target.unit}"
        limit = f"{'<=' if target.at_most else '>='} {target.limit:g} {target.unit}"
        out.append((label, shown, limit, word, gap))

    pipelines, warm = results.get("pipelines", {}), results.get("warmstart", {})
    rows = pipelines.get("rows") or []
    fewest, most = _span(pipelines, warm)
    row = _row(rows, most, True, variant="fast")
    add("fast_25_cfg", f"in-process fast path p50, {_steps_label(most)} with CFG", row and row.get("p50_ms"))
    row = _row(rows, fewest, False, variant="fast")
    add("fast_1", f"in-process fast path p50, {_steps_label(fewest)} no CFG", row and row.get("p50_ms"))
    row = _row(rows, fewest, False, variant="tiny-vae")
    add("fast_1_tiny_vae", f"in-process fast path p50, {_steps_label(fewest)}, tiny VAE", row and row.get("p50_ms"))
    row = _row(warm.get("rows") or [], most, True)
    add("http_25_cfg", f"HTTP p50 (compiled server), {_steps_label(most)} with CFG", row and row.get("http_p50_ms"))
    row = _row(warm.get("rows") or [], fewest, False)
    add("http_1", f"HTTP p50 (compiled server), {_steps_label(fewest)} no CFG", row and row.get("http_p50_ms"))
    cases = [(c["steps"], c["cfg"]) for c in pipelines.get("cases") or []]
    for steps, cfg in cases or [(most, True)]:
        base, fast = _row(rows, steps, cfg, variant="baseline"), _row(rows, steps, cfg, variant="fast")
        value = base["p50_ms"] / fast["p50_ms"] if base and fast and fast["p50_ms"] else None
        add("speedup", f"fast / baseline, {_steps_label(steps)} {'CFG' if cfg else 'no CFG'}", value)
    add("stream_fps", "one stream, closed loop", ((results.get("stream") or {}).get("summary") or {})
        .get("closed_loop_fps"))
    add("warm_start", "start to /readyz, warm compile cache", warm.get("ready_s"))
    return out


def detail_lines(results: dict[str, dict[str, Any]]) -> list[str]:
    """Everything else measured: every in-process row, the approximate variants' image differences, first
    requests (a compile at request time shows there), start-up, the stream, errors."""
    lines: list[str] = []
    pipelines = results.get("pipelines", {})
    if pipelines.get("rows"):
        lines.append(f"\nin-process (pipelines.json, {pipelines.get('gpu')}):")
        lines.append(f"  {'variant':<10}{'case':<20}{'p50 ms':>10}{'first ms':>11}{'of peak':>9}{'diff vs base':>14}")
        for r in pipelines["rows"]:
            case = f"{r['steps']} st {'CFG' if r['cfg'] else 'no CFG'}"
            frac = r.get("fraction_of_peak")
            diff = r.get("mean_abs_diff_vs_baseline")
            lines.append(f"  {r['variant']:<10}{case:<20}{r['p50_ms']:>10.2f}{r['first_call_ms']:>11.1f}"
                         f"{(f'{frac:.1%}' if frac is not None else '-'):>9}"
                         f"{(f'{diff:.2f}' if diff is not None else '-'):>14}")
        for name, info in (pipelines.get("variants") or {}).items():
            if "warmup_s" in info:
                lines.append(f"  {name}: load {info['load_s']} s, warm-up {info['warmup_s']} s "
                             f"(per shape: {info.get('warmup_per_key_s') or 'nothing compiled'}), "
                             f"settings {info.get('settings')}")
    for key, title in (("e2e", "e2e (compile and streams off)"), ("warmstart", "warmstart (compiled server)")):
        data = results.get(key, {})
        if not data:
            continue
        lines.append(f"\n{title}: ready in {data.get('ready_s', '-')} s; {data.get('requests', '-')} timed "
                     "requests per case")
        if key == "warmstart":
            lines.append(f"  compile cache {data.get('compile_cache')}, fill start "
                         f"{data.get('fill_ready_s', data.get('fill', 'not needed'))}; shapes at start: "
                         f"{_warmed(data)}")
        for r in data.get("rows") or []:
            first = r.get("first_request", {})
            overhead = (round(r["http_p50_ms"] - r["inference_p50_ms"], 3)
                        if r.get("http_p50_ms") is not None and r.get("inference_p50_ms") is not None else "-")
            lines.append(f"  {r['steps']} st {'CFG' if r['cfg'] else 'no CFG':<7} http p50 "
                         f"{r.get('http_p50_ms', '-')} ms, inference p50 {r.get('inference_p50_ms', '-')} ms, "
                         f"server overhead {overhead} ms, first request {first.get('ms', '-')} ms"
                         f"{' ERROR' if 'error' in first else ''}, failed {r.get('failed', 0)}")
    summary = (results.get("stream") or {}).get("summary")
    if summary:
        lines.append(f"\nstream {summary.get('frame')}: closed loop {summary.get('closed_loop_fps')} fps (target >= "
                     f"{summary.get('target_fps')}), open loop delivered {summary.get('open_loop_delivered_fps')} fps")
    for key, data in results.items():
        for error in ([data["error"]] if data.get("error") else []) + [
                f"{e.get('variant')} {e.get('stage')}: {e.get('error')}" for e in data.get("errors") or []
                if isinstance(e, dict)]:
            lines.append(f"ERROR {key}: {str(error)[:400]}")
    return lines


def _warmed(data: dict[str, Any]) -> Any:
    """The per-shape seconds the warm start logged ("fast shapes warmed"), or what it logged instead."""
    for event in data.get("startup") or []:
        if event.get("msg") == "fast shapes warmed":
            return (event.get("fields") or event).get("seconds", "-")
    return "no shape policy (compile off, or not cuda)"


def version_line(results: dict[str, dict[str, Any]]) -> str:
    for data in results.values():
        v = data.get("versions")
        if v:
            keys = ("gpu", "torch", "cuda", "triton", "diffusers", "transformers", "fastapi", "uvicorn", "python")
            return "versions: " + ", ".join(f"{k} {v.get(k)}" for k in keys)
    return "versions: no phase recorded them"


def phase_lines(path: Path | None) -> list[str]:
    """The script's phase log (name, exit status or "skipped", seconds, limit), one line each."""
    if path is None or not path.is_file():
        return []
    lines = []
    for line in path.read_text().splitlines():
        name, status, seconds, limit = (line.split("\t") + ["", "", "", ""])[:4]
        meaning = {"0": "ok", "124": "TIMED OUT", "137": "KILLED (timeout)", "skipped": "SKIPPED (deadline)"}
        lines.append(f"  {name:<14}{meaning.get(status, f'FAILED (exit {status})'):<20}{seconds:>5} s"
                     + (f" of {limit} s" if limit and limit != "0" else ""))
    return ["phases:", *lines] if lines else []


def deviation_line(results: dict[str, dict[str, Any]], pod: Path | None = None) -> str:
    """The server settings the run changed from the pods' (the run's pod file, and what each phase recorded)."""
    deviations: dict[str, Any] = dict(json.loads(pod.read_text()).get("deviations") or {}) if pod else {}
    for data in results.values():
        deviations.update(data.get("pod_deviations") or {})
    if not deviations:
        return "server settings: exactly the nvidia pods' (rendered chart)"
    return "server settings differing from the nvidia pods': " + ", ".join(
        f"{name} {d.get('run')} (pods: {d.get('pod')})" for name, d in sorted(deviations.items()))


def render(results: dict[str, dict[str, Any]], phases: Path | None = None, pod: Path | None = None) -> str:
    rows = target_rows(results)
    smoke = any(d.get("smoke") for d in results.values())
    header = ("what", "measured", "target", "verdict", "gap")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(5)]
    lines = [version_line(results), deviation_line(results, pod), *phase_lines(phases)]
    if smoke:
        lines.append("SMOKE RUN (CPU, tiny layout): the plumbing only; no number here says anything about a GPU")
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines + detail_lines(results)) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_report", description=__doc__.split("\n\n")[0])
    p.add_argument("directory", type=Path)
    p.add_argument("--phases", type=Path, default=None, help="device_check.sh's phase log (tab-separated)")
    p.add_argument("--pod", type=Path, default=None, help="the run's pod file (benchmarks.podenv), for its changes")
    p.add_argument("--write", type=Path, default=None, help="also write the table to this file")
    args = p.parse_args(argv)
    text = render(load_results(args.directory), args.phases, args.pod)
    print(text, end="")
    if args.write:
        args.write.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
