"""Shared fixtures: the CDK app is synthesized once per test session."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

_ASSET_HASH = re.compile(r"[0-9a-f]{64}")


def normalize_template(template: Any) -> Any:
    """Replace content hashes (asset keys, bootstrap versions) so snapshots survive unrelated changes."""
    return json.loads(_ASSET_HASH.sub("<asset-hash>", json.dumps(template, sort_keys=True)))


@pytest.fixture(scope="session")
def cloud_assembly(tmp_path_factory):
    """The default app, synthesized once (cdk-nag runs as part of synth)."""
    from app import build_app

    outdir = tmp_path_factory.mktemp("cdk.out")
    app = build_app(outdir=str(outdir))
    return app.synth()


@pytest.fixture(scope="session")
def templates(cloud_assembly) -> dict[str, dict]:
    """Stack name -> synthesized CloudFormation template."""
    return {stack.stack_name: stack.template for stack in cloud_assembly.stacks}
