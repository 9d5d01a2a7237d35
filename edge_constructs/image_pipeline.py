"""CodePipeline V2: source, parallel per-(flavor, arch) image builds, then multi-arch manifests."""
from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_codepipeline as codepipeline
from aws_cdk import aws_codepipeline_actions as actions
from aws_cdk import aws_codestarnotifications as notifications
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from constructs import Construct

from edge_config import BuildTarget, PipelineConfig
from edge_constructs.image_source import ImageSource


def _plain(value: str) -> codebuild.BuildEnvironmentVariable:
    return codebuild.BuildEnvironmentVariable(value=value)


def build_settings(config: PipelineConfig, flavor: str) -> dict[str, str]:
    """Model and compile settings of a build. They live on the pipeline actions (not the projects) so a
    config change updates the pipeline definition, which restarts the pipeline."""
    settings = {
        "BUILD_FINGERPRINT": config.build_fingerprint,
        "MODEL_SOURCE": config.model_source,
    }
    if config.model_source == "hf":
        settings |= {"MODEL_ID": config.model_id, "MODEL_REVISION": config.model_revision}
    else:
        assert config.model_s3_uri is not None  # validated by edge_config
        settings["MODEL_S3_URI"] = config.model_s3_uri
    if flavor == "neuron":
        compile_ = config.neuron_compile
        settings |= {
            "NEURON_HEIGHT": str(compile_.height),
            "NEURON_WIDTH": str(compile_.width),
            "NEURON_BATCH_SIZE": str(compile_.batch_size),
            "NEURON_DTYPE": compile_.dtype,
        }
    return settings


class ImagePipeline(Construct):
    """Source -> Build (one parallel action per target) -> Publish (manifests), failures to SNS."""

    def __init__(self, scope: Construct, construct_id: str, *, config: PipelineConfig, source: ImageSource,
                 build_projects: Mapping[BuildTarget, codebuild.IProject], manifest_project: codebuild.IProject,
                 artifact_bucket: s3.IBucket, notification_topic: sns.ITopic) -> None:
        super().__init__(scope, construct_id)
        self.pipeline = codepipeline.Pipeline(
            self,
            "Pipeline",
            pipeline_name=f"{config.repository_prefix.replace('/', '-')}-images",
            pipeline_type=codepipeline.PipelineType.V2,
            artifact_bucket=artifact_bucket,
            cross_account_keys=False,
            # A newer source or config supersedes a run waiting between stages; its images are not needed.
            execution_mode=codepipeline.ExecutionMode.SUPERSEDED,
            restart_execution_on_update=True,
            triggers=source.triggers or None,
        )
        self.pipeline.add_stage(stage_name="Source", actions=[source.action])

        revision = {"SOURCE_REVISION": _plain(source.revision)}
        self.pipeline.add_stage(
            stage_name="Build",
            actions=[
                actions.CodeBuildAction(
                    action_name=f"{target.accelerator}-{target.arch}",
                    project=build_projects[target],
                    input=source.output,
                    run_order=1,
                    environment_variables={
                        **revision,
                        **{k: _plain(v) for k, v in build_settings(config, target.accelerator).items()},
                    },
                )
                for target in config.targets
            ],
        )
        self.pipeline.add_stage(
            stage_name="Publish",
            actions=[
                actions.CodeBuildAction(
                    action_name="manifests",
                    project=manifest_project,
                    input=source.output,
                    environment_variables={
                        **revision,
                        "BUILD_FINGERPRINT": _plain(config.build_fingerprint),
                    },
                )
            ],
        )
        self.pipeline.notify_on(
            "NotifyFailures",
            notification_topic,
            events=[codepipeline.PipelineNotificationEvents.PIPELINE_EXECUTION_FAILED],
            detail_type=notifications.DetailType.FULL,
        )
