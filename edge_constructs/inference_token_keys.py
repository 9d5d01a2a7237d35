"""The device-token signing key, generated inside Secrets Manager and kept apart from the master key."""
from __future__ import annotations

import json

import aws_cdk as cdk
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from edge_constructs.nag import acknowledge


class InferenceTokenKeys(Construct):
    """A secret {"kid": "k1", "secret": <48 generated letters and digits>} that the server reads through
    ``--token-keys-secret-arn`` (AWSCURRENT signs, AWSPREVIOUS still verifies). App backends that mint device
    tokens themselves read it too; the template carries only the generation rules."""

    def __init__(self, scope: Construct, construct_id: str, *, rotated: bool) -> None:
        super().__init__(scope, construct_id)
        self.secret = secretsmanager.Secret(
            self,
            "Secret",
            description="HS256 signing key of the edge-diffusion device tokens (read by the inference pods and the "
                        "app backends that mint tokens)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=json.dumps({"kid": "k1"}),
                generate_string_key="secret",
                password_length=48,
                exclude_punctuation=True,
                include_space=False,
            ),
            # Tokens live at most an hour, so nothing outlives the stack; no fixed name, so a redeploy never meets
            # the deleted secret's name during its recovery window.
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        if not rotated:
            acknowledge(
                self.secret,
                "AwsSolutions-SMG4",
                "Rotation is off in this configuration (edge.workloads.secret_rotation_days unset); set it to have "
                "Secrets Manager rotate this key on a schedule. Pods re-read it without a restart either way.",
            )
