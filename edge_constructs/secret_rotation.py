"""Scheduled Secrets Manager rotation of the inference secrets (the master key and the token signing key).

One Lambda (handlers/secret_rotation.py) rotates every secret it is given on the configured schedule. The
rotation schedule grants it read and write on each secret and secretsmanager:GetRandomPassword (CDK's
RotationSchedule); pods pick the new version up within --credentials-refresh and still accept the previous one.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from edge_constructs.nag import acknowledge

HANDLER_DIR = Path(__file__).resolve().parent / "handlers"


class SecretRotation(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, secrets: Sequence[secretsmanager.Secret],
                 every_days: int) -> None:
        super().__init__(scope, construct_id)
        log_group = logs.LogGroup(self, "Logs", retention=logs.RetentionDays.ONE_MONTH,
                                  removal_policy=cdk.RemovalPolicy.DESTROY)
        self.function = lambda_.Function(
            self,
            "Handler",
            runtime=lambda_.Runtime.PYTHON_3_14,
            handler="secret_rotation.handler",
            code=lambda_.Code.from_asset(str(HANDLER_DIR), exclude=["__pycache__"]),
            timeout=cdk.Duration.minutes(1),
            memory_size=128,
            log_group=log_group,
            description="Rotates the edge-diffusion inference master key and token signing key",
        )
        self.schedules = [
            secret.add_rotation_schedule(f"Rotation{i}", rotation_lambda=self.function,
                                         automatically_after=cdk.Duration.days(every_days))
            for i, secret in enumerate(secrets)
        ]
        role = self.function.role
        acknowledge(
            role,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
            "The rotation function only writes its own CloudWatch logs, which is exactly what this AWS managed "
            "policy grants.",
        )
        acknowledge(
            role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5[Resource::*]",
            "secretsmanager:GetRandomPassword (added by CDK's RotationSchedule) acts on no resource and does not "
            "support resource-level permissions; every other action is scoped to the rotated secrets.",
        )
