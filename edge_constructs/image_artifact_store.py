"""Encryption key, artifact bucket and access-log bucket of the image pipeline."""
from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from edge_constructs.nag import acknowledge


class ImageArtifactStore(Construct):
    """A rotating KMS key plus the pipeline's artifact bucket, which logs its access to a second bucket."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)

        self.key = kms.Key(
            self,
            "Key",
            description="edge-diffusion image pipeline: artifacts, ECR repositories, build output, notifications",
            enable_key_rotation=True,
        )
        # CodeStar Notifications publishes to the encrypted failure topic through SNS.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCodeStarNotificationsThroughSns",
                principals=[iam.ServicePrincipal("codestar-notifications.amazonaws.com")],
                actions=["kms:GenerateDataKey*", "kms:Decrypt"],
                resources=["*"],
                conditions={"StringEquals": {"kms:ViaService": f"sns.{stack.region}.amazonaws.com"}},
            )
        )

        # Server access logs can only be delivered to SSE-S3 buckets, hence no KMS key here.
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-access-logs",
                    expiration=cdk.Duration.days(365),
                    noncurrent_version_expiration=cdk.Duration.days(30),
                )
            ],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        acknowledge(
            self.access_logs,
            "AwsSolutions-S1",
            "This bucket is the server-access-log target of the artifact bucket; logging it into itself would "
            "recurse and a third bucket would only move the same finding.",
        )

        self.bucket = s3.Bucket(
            self,
            "Artifacts",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="artifacts/",
            # Pipeline artifacts are the zipped source of one execution; images live in ECR.
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-pipeline-artifacts",
                    expiration=cdk.Duration.days(90),
                    noncurrent_version_expiration=cdk.Duration.days(14),
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(7),
                )
            ],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
