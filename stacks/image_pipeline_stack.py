"""ImagePipelineStack: ECR repositories plus the pipeline that fills them with multi-arch serving images."""
from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_codepipeline_actions as pipeline_actions
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_s3 as s3
from constructs import Construct, IConstruct

from charts.inference import ACCELERATORS
from edge_config import BuildTarget, EdgeConfig
from edge_constructs.image_artifact_store import ImageArtifactStore
from edge_constructs.image_build_project import ImageBuildProject
from edge_constructs.image_manifest_project import ImageManifestProject
from edge_constructs.image_notifications import ImageNotifications
from edge_constructs.image_pipeline import ImagePipeline
from edge_constructs.image_repositories import ImageRepositories
from edge_constructs.image_source import ImageSource
from edge_constructs.nag import acknowledge
from edge_constructs.node_image_cache import NodeImageCacheBuilder, execution_finding


class ImagePipelineStack(cdk.Stack):
    """Builds cuda (amd64), neuron (amd64) and cpu (amd64, arm64) images per `pipeline.targets`.

    The cluster stack does not import anything from here: it finds the repositories by name
    (`<pipeline.repository_prefix>-<flavor>`) and the image by `workloads.image_tag`, so both stacks deploy
    independently (docs/pipeline.md).
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: EdgeConfig, **kwargs: Any) -> None:
        kwargs.setdefault(
            "description",
            "edge-diffusion image pipeline: ECR repositories and the CodePipeline that builds the serving images",
        )
        super().__init__(scope, construct_id, **kwargs)
        pipeline_config = config.pipeline

        store = ImageArtifactStore(self, "ArtifactStore")
        self.repositories: dict[str, ecr.Repository] = ImageRepositories(
            self, "Repositories", config=pipeline_config, encryption_key=store.key
        ).repositories

        model_bucket: s3.IBucket | None = None
        model_prefix = ""
        if pipeline_config.model_source == "s3":
            assert pipeline_config.model_s3_uri is not None  # validated by edge_config
            bucket_name, _, model_prefix = pipeline_config.model_s3_uri.removeprefix("s3://").partition("/")
            model_bucket = s3.Bucket.from_bucket_name(self, "ModelBucket", bucket_name)

        build_projects = {
            target: ImageBuildProject(
                self,
                f"Build-{target.accelerator}-{target.arch}",
                config=pipeline_config,
                flavor=target.accelerator,
                arch=target.arch,
                repository=self.repositories[target.accelerator],
                encryption_key=store.key,
                model_bucket=model_bucket,
                model_prefix=model_prefix,
            ).project
            for target in pipeline_config.targets
        }
        manifest_project = ImageManifestProject(
            self, "Manifests", config=pipeline_config, repositories=self.repositories, encryption_key=store.key
        ).project
        notifications = ImageNotifications(
            self, "Notifications", emails=pipeline_config.notification_emails, encryption_key=store.key
        )
        self.pipeline = ImagePipeline(
            self,
            "Images",
            config=pipeline_config,
            source=ImageSource(self, "Source", config=pipeline_config),
            build_projects=build_projects,
            manifest_project=manifest_project,
            artifact_bucket=store.bucket,
            notification_topic=notifications.topic,
        ).pipeline
        self.build_targets: tuple[BuildTarget, ...] = pipeline_config.targets
        self.node_image_cache = self._node_image_cache(config) if config.node_image_cache.build_snapshots else None

        for project in [*build_projects.values(), manifest_project]:
            self._acknowledge_codebuild_role(project, store.bucket)
        # The pipeline role and the Source action's role (both under the pipeline construct) move
        # artifacts in and out of the bucket.
        self._acknowledge_artifact_access(self.pipeline, store.bucket, writes=True)
        self._acknowledge_key_access(self.pipeline)

        for flavor, repository in self.repositories.items():
            cdk.CfnOutput(self, f"{flavor.capitalize()}RepositoryUri", value=repository.repository_uri,
                          description=f"{flavor} images; tags: <revision>-<fingerprint> and "
                                      f"{pipeline_config.image_tag_moving}")
        cdk.CfnOutput(self, "PipelineName", value=self.pipeline.pipeline_name)
        cdk.CfnOutput(self, "FailureTopicArn", value=notifications.topic.topic_arn)

    def _node_image_cache(self, config: EdgeConfig) -> NodeImageCacheBuilder | None:
        """After Publish: snapshot a containerd store holding the images the Local Zone nodes run."""
        flavors = [ACCELERATORS[a]["flavor"] for a in config.accelerators if config.local_zones_offering(a)]
        flavors = [f for f in flavors if BuildTarget(accelerator=f, arch="amd64") in config.pipeline.targets]
        if not flavors:
            return None
        builder = NodeImageCacheBuilder(
            self, "NodeImageCache", config=config.node_image_cache, parameter_name=config.image_cache_parameter_name,
            repositories=[self.repositories[f] for f in flavors], kubernetes_version=config.kubernetes_version)
        # The moving tag the Publish stage just set: this run's images, or a newer run's.
        images = " ".join(f"{self.repositories[f].repository_uri}:{config.pipeline.image_tag_moving}" for f in flavors)
        self.pipeline.add_stage(stage_name="NodeImageCache", actions=[
            pipeline_actions.StepFunctionInvokeAction(
                action_name="snapshot", state_machine=builder.state_machine,
                state_machine_input=pipeline_actions.StateMachineInput.literal({"images": images}))])
        acknowledge(self.pipeline, execution_finding(builder.state_machine),
                    "CodePipeline's grant to follow the executions it starts; execution names are generated per "
                    "run, so only this state machine's execution prefix can be named.")
        return builder

    # ------------------------------------------------------------ cdk-nag acknowledgements
    # cdk-nag 3 matches findings exactly, so each one is spelled out with the tokens it renders.

    def _token(self, value: str, rendered: str) -> str:
        return rendered if cdk.Token.is_unresolved(value) else value

    def _logical_id(self, construct: IConstruct) -> str:
        return self.resolve(self.get_logical_id(construct.node.default_child))  # type: ignore[arg-type]

    def _acknowledge_codebuild_role(self, project: codebuild.IProject, artifacts: s3.IBucket) -> None:
        partition = self._token(self.partition, "<AWS::Partition>")
        region = self._token(self.region, "<AWS::Region>")
        account = self._token(self.account, "<AWS::AccountId>")
        name = f"<{self._logical_id(project)}>"
        acknowledge(
            project,
            f"AwsSolutions-IAM5[Resource::arn:{partition}:logs:{region}:{account}:log-group:/aws/codebuild/{name}:*]",
            "CodeBuild's default grant on the project's own /aws/codebuild log group; stream names are created "
            "per build, so the suffix cannot be narrower.",
        )
        acknowledge(
            project,
            f"AwsSolutions-IAM5[Resource::arn:{partition}:codebuild:{region}:{account}:report-group/{name}-*]",
            "CodeBuild's default grant, limited to report groups named after this project (the buildspecs "
            "publish no test reports, so none is ever created).",
        )
        acknowledge(
            project,
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken has no resource-level permissions; every push and pull is limited to "
            "this pipeline's repository ARNs in the same policy.",
        )
        self._acknowledge_key_access(project)
        self._acknowledge_artifact_access(project, artifacts, writes=False)

    def _acknowledge_key_access(self, scope: IConstruct) -> None:
        for action in ("kms:GenerateDataKey*", "kms:ReEncrypt*"):
            acknowledge(
                scope,
                f"AwsSolutions-IAM5[Action::{action}]",
                "Action wildcard from the KMS encrypt/decrypt grant on this pipeline's own key (the only resource "
                "in the statement), needed to read and write encrypted pipeline artifacts.",
            )

    def _acknowledge_artifact_access(self, scope: IConstruct, artifacts: s3.IBucket, *, writes: bool,
                                     reads: bool = True) -> None:
        actions = (["s3:GetBucket*", "s3:GetObject*", "s3:List*"] if reads else []) + (
            ["s3:Abort*", "s3:DeleteObject*"] if writes else [])
        for action in actions:
            acknowledge(
                scope,
                f"AwsSolutions-IAM5[Action::{action}]",
                "CodePipeline's grant on this pipeline's own artifact bucket (and, for the Source action, the one "
                "seeded source archive object); the wildcard covers the object-version variants of the operation.",
            )
        acknowledge(
            scope,
            f"AwsSolutions-IAM5[Resource::<{self._logical_id(artifacts)}.Arn>/*]",
            "Objects of this pipeline's own artifact bucket; CodePipeline generates a new key per execution "
            "and action, so no narrower prefix exists.",
        )
