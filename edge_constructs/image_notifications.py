"""Encrypted SNS topic that receives the image pipeline's failure notifications."""
from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct


class ImageNotifications(Construct):
    """TLS-only, KMS-encrypted topic with the configured e-mail subscriptions."""

    def __init__(self, scope: Construct, construct_id: str, *, emails: Sequence[str],
                 encryption_key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(
            self,
            "Topic",
            display_name="edge-diffusion image pipeline failures",
            master_key=encryption_key,
            enforce_ssl=True,
        )
        for email in emails:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))
