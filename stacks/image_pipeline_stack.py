"""ImagePipelineStack: builds the serving images (cuda, neuron, cpu) into ECR."""
from __future__ import annotations

from typing import Any

from aws_cdk import Stack
from constructs import Construct


class ImagePipelineStack(Stack):
    """ECR repositories plus the CodePipeline that fills them with multi-arch serving images."""

    def __init__(self, scope: Construct, construct_id: str, *, config: Any, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self.repositories: dict = {}
