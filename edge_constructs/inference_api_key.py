"""The API key AR devices send as ``Authorization: Bearer ...``, generated inside Secrets Manager."""
from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from edge_constructs.nag import acknowledge


class InferenceApiKey(Construct):
    """A Secrets Manager secret whose value Secrets Manager generates at deploy time.

    The template only carries the generation rules, never the key. The secret string is the bare key
    (no JSON wrapper), which is what the server reads through ``--api-key-secret-arn``.
    """

    def __init__(self, scope: Construct, construct_id: str, *, name_prefix: str, rotated: bool = False) -> None:
        super().__init__(scope, construct_id)
        self.secret = secretsmanager.Secret(
            self,
            "Secret",
            secret_name=f"{name_prefix}/inference-api-key",
            description="Bearer key for the edge-diffusion inference endpoints (sent by AR devices)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=48,
                # Header-safe and copy-paste-safe: letters and digits only (48 of them is ~285 bits).
                exclude_punctuation=True,
                include_space=False,
            ),
            # Devices hold this key; deleting the stack must not silently invalidate it before they migrate.
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        if not rotated:
            acknowledge(
                self.secret,
                "AwsSolutions-SMG4",
                "Rotation is off in this configuration (edge.workloads.secret_rotation_days unset): the key is held "
                "by app backends, which must re-read it within each rotation period once it is on. Pods re-read it "
                "without a restart either way (docs/tokens.md).",
            )
