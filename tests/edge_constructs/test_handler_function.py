"""edge_constructs/handler_function.py: the shared Lambda of the custom resources and rotation schedules."""
from __future__ import annotations

import aws_cdk as cdk
import pytest

from edge_constructs.handler_function import handler_function


def test_a_missing_handler_module_is_named_at_synth():
    stack = cdk.Stack(cdk.App(), "S")
    with pytest.raises(ValueError, match="handlers/no_such_handler.py does not exist"):
        handler_function(stack, "no_such_handler", timeout=cdk.Duration.minutes(1), memory_size=128, description="x")


def test_children_keep_the_ids_existing_functions_were_synthesized_with():
    stack = cdk.Stack(cdk.App(), "S")
    function = handler_function(stack, "secret_rotation", timeout=cdk.Duration.minutes(1), memory_size=128,
                                description="x")
    assert {child.node.id for child in stack.node.children} >= {"Logs", "Handler"}
    assert function.node.id == "Handler"
