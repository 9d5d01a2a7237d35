"""CodeBuild project that joins per-arch images into multi-arch indexes (buildspecs/manifest.yml)."""
from __future__ import annotations

from collections.abc import Mapping

import aws_cdk as cdk
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_kms as kms
from constructs import Construct

from edge_config import PipelineConfig
from edge_constructs.image_build_project import BUILD_IMAGES, build_log_group
from edge_constructs.nag import acknowledge

MANIFEST_BUILDSPEC = "buildspecs/manifest.yml"


def image_matrix(config: PipelineConfig) -> str:
    """`cuda=amd64,arm64 neuron=amd64 ...`: what buildspecs/scripts/publish-manifests.sh joins per flavor."""
    return " ".join(f"{flavor}={','.join(config.architectures(flavor))}" for flavor in config.flavors)


class ImageManifestProject(Construct):
    """Small build that tags each flavor's index with the revision and the moving tag."""

    def __init__(self, scope: Construct, construct_id: str, *, config: PipelineConfig,
                 repositories: Mapping[str, ecr.IRepository], encryption_key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.project = codebuild.PipelineProject(
            self,
            "Project",
            description="edge-diffusion: publish multi-arch image indexes with the revision and moving tags",
            build_spec=codebuild.BuildSpec.from_source_filename(MANIFEST_BUILDSPEC),
            environment=codebuild.BuildEnvironment(
                build_image=BUILD_IMAGES["amd64"],
                compute_type=codebuild.ComputeType.SMALL,
                privileged=True,
            ),
            environment_variables={
                "REGISTRY": codebuild.BuildEnvironmentVariable(
                    value=f"{stack.account}.dkr.ecr.{stack.region}.{stack.url_suffix}"
                ),
                "REPOSITORY_PREFIX": codebuild.BuildEnvironmentVariable(value=config.repository_prefix),
                "IMAGE_MATRIX": codebuild.BuildEnvironmentVariable(value=image_matrix(config)),
                "MOVING_TAG": codebuild.BuildEnvironmentVariable(value=config.image_tag_moving),
            },
            encryption_key=encryption_key,
            timeout=cdk.Duration.minutes(30),
            logging=codebuild.LoggingOptions(
                cloud_watch=codebuild.CloudWatchLoggingOptions(log_group=build_log_group(self))
            ),
        )
        for flavor in config.flavors:
            repositories[flavor].grant_pull_push(self.project)
            repositories[flavor].grant(self.project, "ecr:DescribeImages")

        acknowledge(
            self.project,
            "AwsSolutions-CB3",
            "Privileged mode runs the Docker daemon that docker login and docker buildx imagetools use to "
            "publish the multi-arch indexes; nothing else runs in this build.",
        )
