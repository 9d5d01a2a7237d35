"""Wall time of a fresh `cdk synth` of the app (imports, cdk-nag, asset staging)."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def measure_synth(repo_root: Path = REPO_ROOT) -> dict[str, Any]:
    if not (repo_root / "app.py").is_file():
        raise SystemExit("benchmarks.cpu: app.py is missing, so synth_s cannot be measured; "
                         "the CDK app (build_app in app.py) must exist before `make bench`")
    env = {**os.environ, "JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION": "1",
           "PATH": os.pathsep.join([str(repo_root / "node_modules" / ".bin"), str(Path(sys.executable).parent),
                                    os.environ.get("PATH", "")])}
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as outdir:
        code = f"from app import build_app; build_app(outdir={outdir!r}).synth()"
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code], cwd=repo_root, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"benchmarks.cpu: synth failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"synth_s": round(elapsed, 3)}
