"""ECR lifecycle rules of the serving repositories, replayed by a small model of ECR's rule semantics.

ECR's documented semantics (lifecycle_policy.html, "How lifecycle policies work"): rules are evaluated in
rulePriority order; an image is claimed by the first rule whose selection matches it and a later rule never
expires it; `imageCountMoreThan` keeps the newest `countNumber` images the rule claims (by push time);
`tagPatternList` matches when any tag matches any pattern (`*` is a wildcard).
"""
from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field

import aws_cdk as cdk
import pytest
from aws_cdk import aws_kms as kms
from aws_cdk.assertions import Template

from edge_config import PipelineConfig
from edge_constructs.image_repositories import ImageRepositories


@dataclass
class Image:
    pushed: int
    tags: set[str]
    children: tuple[int, ...] = ()  # push ids of the per-arch images an index references
    age_days: int = 0
    expired: bool = field(default=False)


def _matches(rule: dict, image: Image) -> bool:
    selection = rule["selection"]
    status = selection["tagStatus"]
    if status == "untagged":
        return not image.tags
    if status == "tagged":
        if not image.tags:
            return False
        patterns = selection.get("tagPatternList") or [p + "*" for p in selection.get("tagPrefixList", [])]
        return any(fnmatch.fnmatchcase(tag, pattern) for tag in image.tags for pattern in patterns)
    return True


def apply_lifecycle(rules: list[dict], images: list[Image]) -> None:
    claimed: dict[int, list[Image]] = {}
    live = [i for i in images if not i.expired]
    for image in live:
        for rule in sorted(rules, key=lambda r: r["rulePriority"]):
            if _matches(rule, image):
                claimed.setdefault(rule["rulePriority"], []).append(image)
                break
    for rule in rules:
        mine = sorted(claimed.get(rule["rulePriority"], []), key=lambda i: i.pushed, reverse=True)
        selection = rule["selection"]
        if selection["countType"] == "imageCountMoreThan":
            for image in mine[selection["countNumber"]:]:
                image.expired = True
        else:
            for image in mine:
                if image.age_days > selection["countNumber"]:
                    image.expired = True


def _policy(config: PipelineConfig) -> list[dict]:
    stack = cdk.Stack(cdk.App(), "Repos")
    ImageRepositories(stack, "Repos", config=config, encryption_key=kms.Key(stack, "Key"))
    resources = Template.from_stack(stack).find_resources("AWS::ECR::Repository")
    texts = {json.dumps(r["Properties"]["LifecyclePolicy"]["LifecyclePolicyText"]) for r in resources.values()}
    assert len(texts) == 1
    return json.loads(json.loads(texts.pop()))["rules"]


@pytest.mark.parametrize("arches", [("amd64", "arm64"), ("amd64",)])
def test_no_retained_index_loses_a_child(arches):
    """Builds push one image per arch, then the index; some builds are abandoned after one arch (a failed
    sibling, a superseded revision). After every build, every index ECR keeps must keep all its children."""
    config = PipelineConfig(keep_images=6)
    rules = _policy(config)
    images: list[Image] = [Image(0, {"cache-amd64"}), Image(1, {"cache-arm64"})]
    pushed = 2
    for build in range(40):
        tag = f"rev{build:09d}-0000abcd"
        children = []
        for arch in arches:
            images.append(Image(pushed, {f"{tag}-{arch}"}))
            children.append(pushed)
            pushed += 1
        abandoned = build % 7 == 3 and len(arches) > 1
        if abandoned:
            images.pop()  # the second arch never arrived; the first arch's image stays an orphan
            pushed -= 1
        else:
            for image in images:
                image.tags.discard(config.image_tag_moving)
            images.append(Image(pushed, {tag, config.image_tag_moving}, tuple(children)))
            pushed += 1
        apply_lifecycle(rules, images)
        by_push = {i.pushed: i for i in images}
        for index in (i for i in images if i.children and not i.expired):
            lost = [c for c in index.children if by_push[c].expired]
            assert not lost, f"after build {build}: index {sorted(index.tags)} kept but children {lost} expired"
    kept_indexes = [i for i in images if i.children and not i.expired]
    assert len(kept_indexes) == config.keep_images
    assert not any(i.expired for i in images if i.tags & {"cache-amd64", "cache-arm64"})
