"""The S3 bucket of the nvidia pods' compile cache, and the one grant that lets a role use its prefix."""
from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from edge_config import CompileCacheConfig
from edge_constructs.nag import acknowledge


class CompileCacheBucket(Construct):
    """Compile artifacts the first pod per GPU type, release and shape set uploads after warm-up, and later pods
    download at start. Everything in it can be rebuilt by compiling again, so it expires by age and goes with the
    stack."""

    def __init__(self, scope: Construct, construct_id: str, *, cache: CompileCacheConfig) -> None:
        super().__init__(scope, construct_id)
        self.prefix = cache.s3_prefix
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            # SSE-S3 rather than KMS: the artifacts are kernels compiled from public model code, and a key would
            # only add kms grants to the pods' role and a KMS call to every download.
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            # Unversioned: an expired or overwritten artifact is gone, not kept as a billed noncurrent version.
            versioned=False,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-compile-artifacts",
                    expiration=cdk.Duration.days(cache.expiration_days),
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(1),
                )
            ],
            # Disposable: a teardown empties and deletes it (a kept bucket would serve no redeploy, whose bucket
            # gets a new generated name), and a non-empty bucket would otherwise fail the stack deletion.
            removal_policy=cdk.RemovalPolicy.DESTROY,
            auto_delete_objects=True,
        )
        acknowledge(
            self.bucket,
            "AwsSolutions-S1",
            "The bucket holds only compile artifacts that any pod can rebuild, written by one Pod Identity role "
            "limited to one prefix; an access-log bucket would outlive the disposable cache on teardown, and "
            "CloudTrail data events can audit the writes if ever needed.",
        )

    def grant_read_write(self, role: iam.Role) -> None:
        """Get and put objects below the prefix, and list only that prefix (so a missing key reads as 404, a cache
        miss, rather than 403); nothing else in the bucket and no deletes."""
        role.add_to_policy(iam.PolicyStatement(
            sid="CompileCacheObjects",
            actions=["s3:GetObject", "s3:PutObject"],
            resources=[self.bucket.arn_for_objects(f"{self.prefix}*")],
        ))
        role.add_to_policy(iam.PolicyStatement(
            sid="CompileCacheListPrefix",
            actions=["s3:ListBucket"],
            resources=[self.bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{self.prefix}*"]}},
        ))
        acknowledge(
            role.node.find_child("DefaultPolicy"),
            f"AwsSolutions-IAM5[Resource::<{self._bucket_logical_id()}.Arn>/{self.prefix}*]",
            "The server names each artifact by a hash of GPU model, torch/triton release and shape set, unknown at "
            "synth; the wildcard covers only the cache prefix of this one bucket, with get and put only.",
        )

    def _bucket_logical_id(self) -> str:
        return cdk.Stack.of(self).get_logical_id(self.bucket.node.default_child)
