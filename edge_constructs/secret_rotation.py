"""Scheduled Secrets Manager rotation of the inference secrets (the master key and the token signing key).

One Lambda (handlers/secret_rotation.py) rotates every secret it is given on the configured schedule. The
rotation schedule grants it read and write on each secret and secretsmanager:GetRandomPassword (CDK's
RotationSchedule); pods pick the new version up within --credentials-refresh and still accept the previous one.
"""
from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from edge_constructs.handler_function import handler_function
from edge_constructs.nag import acknowledge



class SecretRotation(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, secrets: Sequence[secretsmanager.Secret],
                 every_days: int) -> None:
        super().__init__(scope, construct_id)
        self.function = handler_function(
            self, "secret_rotation", timeout=cdk.Duration.minutes(1), memory_size=128,
            description="Rotates the edge-diffusion inference master key and token signing key")
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
