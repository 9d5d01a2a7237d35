"""cdk-nag acknowledgements: one call per finding, each with the reason it is accepted."""
from __future__ import annotations

import aws_cdk as cdk
from constructs import IConstruct


def acknowledge(construct: IConstruct, finding: str, reason: str) -> None:
    """Acknowledge one exact AwsSolutions finding (e.g. ``AwsSolutions-IAM5[Resource::*]``) on a construct."""
    if len(reason) < 40:
        raise ValueError(f"acknowledgement of {finding} needs a specific reason, got {reason!r}")
    cdk.Validations.of(construct).acknowledge(cdk.Acknowledgment(id=finding, reason=reason))
