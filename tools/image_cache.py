"""The layer-cache contract, measured on real builds (``make image-cache``).

The contract (docs/pipeline.md, serving/Dockerfile): a change to the server code rebuilds only the code layer;
a change to the server's requirements rebuilds the runtime layers but never the weights. Measured by building
the ``cpu`` target three times with buildah's layer cache, from a scratch copy of the build contexts:

1. as the repository has it (the baseline);
2. with one server ``.py`` file changed: every layer below the server code must keep its diff ID;
3. with ``requirements-serving.txt`` changed instead: the weights layer must keep its diff ID (and the
   runtime layers must change, or the experiment proved nothing).

The changes are comment lines, so the image still works and pip resolves the same set; what the cache sees is
a changed input file. The repository itself is never modified. CLI: ``python -m tools.image_cache``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from tools.image_build import CACHE_DIR, REPO_ROOT, TINY_MODEL, build, layer_table

WORK = CACHE_DIR / "cache-experiment"
CODE_FILE = "settings.py"
REQUIREMENTS = "requirements-serving.txt"


def _contexts() -> tuple[Path, Path]:
    shutil.rmtree(WORK, ignore_errors=True)
    serving = WORK / "serving"
    shutil.copytree(REPO_ROOT / "serving", serving, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (WORK / "root").mkdir()
    shutil.copy2(REPO_ROOT / REQUIREMENTS, WORK / "root" / REQUIREMENTS)
    return serving, WORK / "root"


def _index(layers: list[dict], marker: str) -> int:
    found = [i for i, layer in enumerate(layers) if marker in layer["created_by"]]
    if len(found) != 1:
        raise RuntimeError(f"expected one layer made by an instruction naming {marker!r}, found {len(found)}")
    return found[0]


def compare(baseline: dict, changed: dict, keep_below: str, must_change: str) -> dict:
    """Which layers kept their diff IDs; ``keep_below`` names the first layer allowed to change."""
    before, after = baseline["layers"], changed["layers"]
    if len(before) != len(after):
        return {"held": False, "why": f"{len(before)} layers became {len(after)}"}
    first_allowed = _index(before, keep_below)
    kept = [a["diff_id"] == b["diff_id"] for a, b in zip(before, after)]
    changed_index = _index(before, must_change)
    return {
        "held": all(kept[:first_allowed]) and not kept[changed_index],
        "layers_kept": [i + 1 for i, same in enumerate(kept) if same],
        "layers_rebuilt": [i + 1 for i, same in enumerate(kept) if not same],
        "build_s": changed["build_s"],
    }


def weights_kept(baseline: dict, changed: dict) -> dict:
    before, after = baseline["layers"], changed["layers"]
    weights_before, weights_after = before[_index(before, "/opt/model")], after[_index(after, "/opt/model")]
    runtime_rebuilt = [i + 1 for i, (a, b) in enumerate(zip(before, after)) if a["diff_id"] != b["diff_id"]]
    return {
        "held": weights_before["diff_id"] == weights_after["diff_id"] and bool(runtime_rebuilt),
        "weights_diff_id": [weights_before["diff_id"], weights_after["diff_id"]],
        "layers_rebuilt": runtime_rebuilt,
        "build_s": changed["build_s"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=CACHE_DIR / "cache-experiment.json")
    args = parser.parse_args(argv)
    serving, root = _contexts()
    tag = "localhost/edge-diffusion-cpu:cache-"
    baseline = build(serving=serving, requirements=root, model=TINY_MODEL, tag=tag + "baseline")

    code = serving / CODE_FILE
    original = code.read_text()
    code.write_text(original + "# layer-cache experiment: a changed server source file\n")
    code_change = build(serving=serving, requirements=root, model=TINY_MODEL, tag=tag + "code")
    code.write_text(original)

    requirements = root / REQUIREMENTS
    requirements.write_text(requirements.read_text() + "# layer-cache experiment: a changed requirements file\n")
    requirements_change = build(serving=serving, requirements=root, model=TINY_MODEL, tag=tag + "requirements")

    report = {
        "baseline": baseline,
        "code_change": {"changed": f"serving/{CODE_FILE}",
                        **compare(baseline, code_change, keep_below="/app/serving", must_change="/app/serving")},
        "requirements_change": {"changed": REQUIREMENTS, **weights_kept(baseline, requirements_change)},
        "tables": {"baseline": layer_table(baseline), "code_change": layer_table(code_change),
                   "requirements_change": layer_table(requirements_change)},
    }
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    for name in ("code_change", "requirements_change"):
        print(name, json.dumps({k: v for k, v in report[name].items()}, indent=None))
    ok = report["code_change"]["held"] and report["requirements_change"]["held"]
    print("layer-cache contract " + ("held" if ok else "BROKEN") + f"; report: {args.report}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
