"""ECR repositories of the serving images, one per flavor (contract: `<repository_prefix>-<flavor>`)."""
from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_kms as kms
from constructs import Construct

from edge_config import ARCHITECTURES, IMAGE_FLAVORS, PipelineConfig

# BuildKit's registry cache tag per architecture (buildspecs/scripts/build-image.sh writes cache-<arch>).
CACHE_TAG_PATTERN = "cache-*"
UNTAGGED_RETENTION = cdk.Duration.days(14)
# Per-arch images pushed by builds that never produced their index (a failed sibling arch, a superseded
# revision) count against the per-arch rule; this many of them can exist without costing a kept index a child.
ORPHAN_MARGIN = 10


class ImageRepositories(Construct):
    """Scanned, KMS-encrypted, immutable-tag repositories for cuda, neuron and cpu images.

    Every flavor gets a repository even when no build target produces it, so the cluster stack's
    by-name references (`ecr.Repository.from_repository_name`) always resolve.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: PipelineConfig,
                 encryption_key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.repositories: dict[str, ecr.Repository] = {}
        for flavor in IMAGE_FLAVORS:
            repository = ecr.Repository(
                self,
                flavor.capitalize(),
                repository_name=config.repository_name(flavor),
                image_scan_on_push=True,
                # Revision tags never change; only the moving tag and the layer cache are rewritten per build.
                image_tag_mutability=ecr.TagMutability.IMMUTABLE_WITH_EXCLUSION,
                image_tag_mutability_exclusion_filters=[
                    ecr.ImageTagMutabilityExclusionFilter.wildcard(config.image_tag_moving),
                    ecr.ImageTagMutabilityExclusionFilter.wildcard(CACHE_TAG_PATTERN),
                ],
                encryption=ecr.RepositoryEncryption.KMS,
                encryption_key=encryption_key,
                # Images outlive the stack: running clusters pull them by tag or digest.
                removal_policy=cdk.RemovalPolicy.RETAIN,
            )
            # ECR applies the lowest-priority-number rule that selects an image and never lets a later rule
            # expire it, so the first rule shields the cache from the count rule without ever firing itself.
            repository.add_lifecycle_rule(
                description="Keep the BuildKit layer cache (one cache-<arch> tag per architecture)",
                tag_pattern_list=[CACHE_TAG_PATTERN],
                max_image_count=len(ARCHITECTURES),
            )
            repository.add_lifecycle_rule(
                description="Expire untagged manifests (cache manifests replaced by a newer build)",
                tag_status=ecr.TagStatus.UNTAGGED,
                max_image_age=UNTAGGED_RETENTION,
            )
            # Per-arch images are tagged <tag>-<arch> and pushed before their index. Counting them apart from
            # the indexes, with a margin for the orphans of abandoned builds, keeps every child at least as
            # long as the newest `keep_images` indexes that reference it (a shared count could cut between an
            # index and its children).
            for arch in ARCHITECTURES:
                repository.add_lifecycle_rule(
                    description=f"Keep the {arch} images of the kept indexes (plus orphans of abandoned builds)",
                    tag_pattern_list=[f"*-{arch}"],
                    max_image_count=config.keep_images + ORPHAN_MARGIN,
                )
            repository.add_lifecycle_rule(
                description="Keep the most recent multi-arch indexes (the moving tag is always the newest)",
                tag_status=ecr.TagStatus.ANY,
                max_image_count=config.keep_images,
            )
            self.repositories[flavor] = repository
