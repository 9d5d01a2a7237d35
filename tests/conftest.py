"""Shared fixtures: the CDK app is synthesized once per test session; config variants of EdgeClusterStack once
each (without cdk-nag: the default synth already runs it on the same constructs)."""
from __future__ import annotations

import functools
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


# One variant with every opt-in part on, shared by the tests that need them (each variant costs a synth).
ADDONS_VARIANT = {"volcano_enabled": True, "workloads__warm_spare_nodes": 1, "workloads__secret_rotation_days": 30,
                  "admin_principal_arn": "arn:aws:iam::123456789012:role/Admin"}


@functools.cache
def _synth_cluster(overrides: str) -> tuple[dict, tuple[str, ...]]:
    import aws_cdk as cdk
    from aws_cdk import cx_api

    import edge_config
    from stacks.edge_cluster_stack import EdgeClusterStack
    from tests.test_edge_config import ctx

    config = edge_config.load_config(ctx(**json.loads(overrides)))
    app = cdk.App()
    stack = EdgeClusterStack(app, "EdgeClusterStack", config=config,
                             env=cdk.Environment(account=config.account, region=config.region))
    artifact = app.synth().get_stack_by_name(stack.stack_name)
    warnings = tuple(str(m.entry.data) for m in artifact.messages if m.level == cx_api.SynthesisMessageLevel.WARNING)
    return artifact.template, warnings


@pytest.fixture(scope="session")
def cluster_template():
    """cluster_template(**overrides) -> the EdgeClusterStack template for `edge.<path>` overrides."""
    return lambda **overrides: _synth_cluster(json.dumps(overrides, sort_keys=True))[0]


@pytest.fixture(scope="session")
def cluster_warnings():
    """cluster_warnings(**overrides) -> the synth-time warnings of EdgeClusterStack for that config."""
    return lambda **overrides: _synth_cluster(json.dumps(overrides, sort_keys=True))[1]
