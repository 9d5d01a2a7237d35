"""The Python Lambda behind a custom resource or rotation schedule: code from edge_constructs/handlers/, its own
log group kept a month and deleted with the stack. The children keep the IDs "Logs" and "Handler" in the caller's
scope, so the logical IDs of existing functions do not change."""
from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

HANDLER_DIR = Path(__file__).resolve().parent / "handlers"


def handler_function(scope: Construct, module: str, *, timeout: cdk.Duration, memory_size: int, description: str,
                     environment: dict[str, str] | None = None) -> lambda_.Function:
    """``module``: a file of handlers/ without .py, whose ``handler`` function is the entry point."""
    if not (HANDLER_DIR / f"{module}.py").is_file():
        raise ValueError(f"edge_constructs/handlers/{module}.py does not exist: add the handler there first")
    log_group = logs.LogGroup(scope, "Logs", retention=logs.RetentionDays.ONE_MONTH,
                              removal_policy=cdk.RemovalPolicy.DESTROY)
    return lambda_.Function(
        scope, "Handler",
        runtime=lambda_.Runtime.PYTHON_3_14,
        handler=f"{module}.handler",
        code=lambda_.Code.from_asset(str(HANDLER_DIR), exclude=["__pycache__"]),
        timeout=timeout,
        memory_size=memory_size,
        log_group=log_group,
        environment=environment,
        description=description,
    )
