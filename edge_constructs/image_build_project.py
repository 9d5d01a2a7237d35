"""CodeBuild project that builds one (flavor, architecture) serving image with buildspecs/build-image.yml."""
from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

import versions
from edge_config import PipelineConfig
from edge_constructs.nag import acknowledge

BUILD_IMAGE_BUILDSPEC = "buildspecs/build-image.yml"

# Config names (edge_config) -> CodeBuild compute types.
COMPUTE_TYPES = {
    "BUILD_GENERAL1_LARGE": codebuild.ComputeType.LARGE,
    "BUILD_GENERAL1_XLARGE": codebuild.ComputeType.X_LARGE,
    "BUILD_GENERAL1_2XLARGE": codebuild.ComputeType.X2_LARGE,
}

# Native builders: amd64 on LINUX_CONTAINER, arm64 on ARM_CONTAINER (no QEMU emulation in the pipeline).
BUILD_IMAGES = {
    "amd64": codebuild.LinuxBuildImage.from_code_build_image_id(versions.CODEBUILD_IMAGE_AMD64),
    "arm64": codebuild.LinuxArmBuildImage.from_code_build_image_id(versions.CODEBUILD_IMAGE_ARM64),
}


def build_log_group(scope: Construct) -> logs.LogGroup:
    """Build logs with a bounded retention (CodeBuild's implicit groups never expire)."""
    return logs.LogGroup(scope, "Logs", retention=logs.RetentionDays.THREE_MONTHS,
                         removal_policy=cdk.RemovalPolicy.DESTROY)


class ImageBuildProject(Construct):
    """Privileged, native-architecture build that may push only to its flavor's repository."""

    def __init__(self, scope: Construct, construct_id: str, *, config: PipelineConfig, flavor: str, arch: str,
                 repository: ecr.IRepository, encryption_key: kms.IKey,
                 model_bucket: s3.IBucket | None = None, model_prefix: str = "") -> None:
        super().__init__(scope, construct_id)
        neuron = flavor == "neuron"
        compute = config.neuron_compute_type if neuron else config.build_compute_type

        variables: dict[str, codebuild.BuildEnvironmentVariable] = {
            "FLAVOR": codebuild.BuildEnvironmentVariable(value=flavor),
            "ARCH": codebuild.BuildEnvironmentVariable(value=arch),
            "REPOSITORY_URI": codebuild.BuildEnvironmentVariable(value=repository.repository_uri),
            "BUILDKIT_IMAGE": codebuild.BuildEnvironmentVariable(value=versions.BUILDKIT_IMAGE),
        }
        if config.hf_token_secret_name is not None:
            # Resolved by CodeBuild at run time; the template and the project only hold the secret's name.
            variables["HF_TOKEN"] = codebuild.BuildEnvironmentVariable(
                type=codebuild.BuildEnvironmentVariableType.SECRETS_MANAGER,
                value=config.hf_token_secret_name,
            )

        self.project = codebuild.PipelineProject(
            self,
            "Project",
            description=f"edge-diffusion: build and push the {flavor} serving image for linux/{arch}",
            build_spec=codebuild.BuildSpec.from_source_filename(BUILD_IMAGE_BUILDSPEC),
            environment=codebuild.BuildEnvironment(
                build_image=BUILD_IMAGES[arch],
                compute_type=COMPUTE_TYPES[compute],
                privileged=True,
            ),
            environment_variables=variables,
            encryption_key=encryption_key,
            # The Neuron compile dominates a cold build; warm builds finish in minutes.
            timeout=cdk.Duration.hours(4 if neuron else 2),
            logging=codebuild.LoggingOptions(
                cloud_watch=codebuild.CloudWatchLoggingOptions(log_group=build_log_group(self))
            ),
        )
        repository.grant_pull_push(self.project)
        # describe-images: skip a revision that is already published (immutable tags, retried executions).
        repository.grant(self.project, "ecr:DescribeImages")
        if model_bucket is not None:
            model_bucket.grant_read(self.project, f"{model_prefix}*")
            partition = cdk.Stack.of(self).partition
            if cdk.Token.is_unresolved(partition):
                partition = "<AWS::Partition>"
            acknowledge(
                self.project,
                f"AwsSolutions-IAM5[Resource::arn:{partition}:s3:::{model_bucket.bucket_name}/{model_prefix}*]",
                "Read-only access to the configured model_s3_uri prefix: the model is a directory whose file "
                "names the build only learns when it lists the prefix.",
            )

        acknowledge(
            self.project,
            "AwsSolutions-CB3",
            "Privileged mode runs the Docker daemon that docker buildx needs to build and push the serving image; "
            "the build only runs this repository's Dockerfile and buildspec.",
        )
