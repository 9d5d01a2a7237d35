"""Source of the image pipeline: this repository's build inputs, seeded by the stack or from a Git host."""
from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_codepipeline as codepipeline
from aws_cdk import aws_codepipeline_actions as actions
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from edge_config import PipelineConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
# What the image builds read. The S3 archive holds only these, and a Git push touching nothing else does
# not start the pipeline.
BUILD_INPUTS = ("serving/", "buildspecs/", "requirements-serving.txt")
# gitignore semantics, relative to the repository root: drop everything, re-include the build inputs.
ARCHIVE_EXCLUDES = (
    "/*",
    *(f"!/{path}" for path in BUILD_INPUTS),
    "__pycache__/",
    "*.py[cod]",
    ".pytest_cache/",
)


class ImageSource(Construct):
    """The Source action plus what later actions need from it: the artifact, revision and triggers.

    `source: s3` (default) uploads the build inputs as a CDK file asset, so a deploy works with no Git
    connection; the archive key changes with its content, which updates the pipeline definition and
    restarts it. `source: codeconnections` follows a branch through an existing CodeConnections connection.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: PipelineConfig) -> None:
        super().__init__(scope, construct_id)
        self.output = codepipeline.Artifact("Source")
        self.triggers: list[codepipeline.TriggerProps] = []

        if config.source == "s3":
            self.archive = s3_assets.Asset(
                self,
                "Archive",
                path=str(REPO_ROOT),
                exclude=list(ARCHIVE_EXCLUDES),
                ignore_mode=cdk.IgnoreMode.GIT,
            )
            action = actions.S3SourceAction(
                action_name="Source",
                bucket=self.archive.bucket,
                bucket_key=self.archive.s3_object_key,
                output=self.output,
                # A new archive means a new key, i.e. a pipeline update, which restarts the pipeline.
                trigger=actions.S3Trigger.NONE,
            )
            # The archive's ETag: a content hash, stable across re-deploys of the same content.
            self.revision = action.variables.e_tag
        else:
            assert config.connection_arn is not None and config.repository is not None  # validated by edge_config
            owner, repo = config.repository.split("/", 1)
            action = actions.CodeStarConnectionsSourceAction(
                action_name="Source",
                connection_arn=config.connection_arn,
                owner=owner,
                repo=repo,
                branch=config.branch,
                output=self.output,
            )
            self.revision = action.variables.commit_id
            self.triggers.append(
                codepipeline.TriggerProps(
                    provider_type=codepipeline.ProviderType.CODE_STAR_SOURCE_CONNECTION,
                    git_configuration=codepipeline.GitConfiguration(
                        source_action=action,
                        push_filter=[
                            codepipeline.GitPushFilter(
                                branches_includes=[config.branch],
                                file_paths_includes=[p + "**" if p.endswith("/") else p for p in BUILD_INPUTS],
                            )
                        ],
                    ),
                )
            )
        self.action: codepipeline.IAction = action
