#!/usr/bin/env python3
"""CDK entry point: the only module that reads CDK context.

`build_app()` works both under the CDK CLI (context arrives through the environment, with `-c` overrides)
and directly from Python/tests (the defaults and feature flags are read from cdk.json next to this file).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

import edge_config
from stacks.edge_cluster_stack import EdgeClusterStack
from stacks.image_pipeline_stack import ImagePipelineStack
from stacks.operations_stack import OperationsStack

CDK_JSON = Path(__file__).resolve().parent / "cdk.json"


def _cdk_json_context() -> dict[str, Any]:
    return json.loads(CDK_JSON.read_text())["context"]


def build_app(context: Mapping[str, Any] | None = None, outdir: str | None = None) -> cdk.App:
    """Build the app with cdk-nag enabled; `context` overrides cdk.json and any CLI context."""
    app = cdk.App(
        # cdk.json first (so feature flags and defaults hold outside the CLI), then CLI context, then the caller's.
        context=_cdk_json_context(),
        post_cli_context=dict(context or {}),
        outdir=outdir,
    )
    config = edge_config.load_config(app.node.get_all_context())
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))

    env = cdk.Environment(account=config.account, region=config.region)
    images = ImagePipelineStack(app, "ImagePipelineStack", config=config, env=env)
    cluster = EdgeClusterStack(app, "EdgeClusterStack", config=config, env=env)
    OperationsStack(app, "OperationsStack", config=config, metrics=cluster.metrics, pipeline=images.pipeline, env=env)
    return app


if __name__ == "__main__":
    try:
        build_app().synth()
    except edge_config.ConfigError as exc:
        raise SystemExit(f"Invalid edge-diffusion config: {exc}") from None
