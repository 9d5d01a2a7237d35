"""Synthesize EdgeClusterStack alone for config variants the default app does not cover (no cdk-nag: the
session's default synth already runs it on the same constructs)."""
from __future__ import annotations

import functools
import json

import aws_cdk as cdk
from aws_cdk import cx_api
import pytest

import edge_config
from tests.test_edge_config import ctx


@functools.cache
def _synth_cluster(overrides: str) -> tuple[dict, tuple[str, ...]]:
    from stacks.edge_cluster_stack import EdgeClusterStack

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
