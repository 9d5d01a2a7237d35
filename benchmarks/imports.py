"""What the server's imports cost, and whether diffusers' import of torch._dynamo can wait until compile time."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent

# What the server process imports before it can load anything (interpreter start included).
IMPORTS = ("import serving.runtime.server, serving.api, torch, transformers; "
           "from diffusers import DiffusionPipeline, StableDiffusionPipeline")
# Modules whose cumulative import time the profile reports (first import of each, wherever it happens).
PROFILED = ("serving.runtime.server", "serving.api", "torch", "torch._dynamo", "transformers", "diffusers")

# Runs in a fresh interpreter: refuse torch._dynamo and its submodules, note which file outside torch asked for
# them, and see whether the server's diffusers imports survive. diffusers itself catches the ImportError in one
# place (utils/torch_utils.py); any other importer that does not is what makes the deferral impossible.
_PROBE = r"""
import importlib.abc, json, sys, traceback
callers = []
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch._dynamo" or name.startswith("torch._dynamo."):
            for frame in reversed(traceback.extract_stack()[:-1]):
                f = frame.filename.replace("\\", "/")
                if "/torch/" in f or f.startswith("<frozen"):
                    continue
                site = f.split("site-packages/")[-1] + f":{frame.lineno}"
                if site not in callers:
                    callers.append(site)
                break
            raise ImportError(f"{name} refused by the deferral probe")
        return None
sys.meta_path.insert(0, Refuse())
try:
    import torch
    from diffusers import DiffusionPipeline, StableDiffusionPipeline
    ok, error = True, None
except Exception as exc:
    lines = str(exc).strip().splitlines()
    ok, error = False, (type(exc).__name__ + ": " + lines[0] + (" ... " + lines[-1] if len(lines) > 1 else ""))[:400]
print(json.dumps({"imports_without_dynamo": ok, "error": error, "importers": callers}))
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def imports_s() -> float:
    """Seconds for a fresh interpreter to import the server's stack and exit."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", IMPORTS], cwd=REPO_ROOT, env=_env(), capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"benchmarks.cpu: importing the server stack failed:\n{proc.stderr[-2000:]}")
    return elapsed


def parse_importtime(stderr: str) -> dict[str, float]:
    """Cumulative seconds of each PROFILED module's first import, from `python -X importtime` output."""
    found: dict[str, float] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = [p.strip() for p in line[len("import time:"):].split("|")]
        if len(parts) != 3 or not parts[1].isdigit():
            continue
        name = parts[2]
        if name in PROFILED and name not in found:
            found[name] = int(parts[1]) / 1e6
    return found


def import_profile() -> dict[str, Any]:
    """Where the import seconds go, and the torch._dynamo deferral probe's verdict."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", IMPORTS], cwd=REPO_ROOT, env=_env(),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"benchmarks.cpu: profiling the server's imports failed:\n{proc.stderr[-2000:]}")
    cumulative = parse_importtime(proc.stderr)
    probe = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO_ROOT, env=_env(), capture_output=True, text=True)
    verdict = json.loads(probe.stdout.strip().splitlines()[-1])
    return {
        # -X importtime's own bookkeeping inflates these a little; they are for shares, not for the total.
        "cumulative_s": {name: round(cumulative[name], 3) for name in PROFILED if name in cumulative},
        "dynamo_deferrable_without_patching": verdict["imports_without_dynamo"],
        "dynamo_importers": verdict["importers"],
        "dynamo_probe_error": verdict["error"],
    }
