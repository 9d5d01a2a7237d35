"""Read the config out of the CDK context: the ``edge`` object, then each ``edge.<dotted.path>`` override."""
from __future__ import annotations

import copy
import json
from typing import Any, Mapping

from pydantic import ValidationError

from edge_config.app_config import EdgeConfig
from edge_config.errors import CONTEXT_KEY, config_error, fail


def _parse_value(raw: Any) -> Any:
    """JSON-parse a `-c` string when it parses; numbers keep their text (an image tag "1.10", an account id), and
    pydantic coerces that text for number fields."""
    if not isinstance(raw, str):
        return raw
    try:
        parsed = json.loads(raw)
    except ValueError:
        return raw
    if isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
        return raw.strip()
    return parsed


def _apply_override(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node: Any = tree
    walked = CONTEXT_KEY
    for i, part in enumerate(parts):
        if not part:
            raise fail(f"{CONTEXT_KEY}.{dotted}", "empty path segment in context key", "write edge.a.b, not edge.a..b")
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise fail(f"{walked}.{part}", f"list index out of range (the list has {len(node)} items)",
                           f"use an index 0..{len(node) - 1}, or override the whole list with -c {walked}='[...]'")
            key: Any = int(part)
            walked = f"{walked}[{part}]"
        elif isinstance(node, dict):
            key = part
            walked = f"{walked}.{part}"
        else:
            raise fail(walked, "is not an object or list, so it has no sub-fields", f"override {walked} itself")
        if i == len(parts) - 1:
            node[key] = value
        else:
            if isinstance(node, dict) and key not in node:
                node[key] = {}
            node = node[key]


def merge_context(context: Mapping[str, Any]) -> dict:
    """Build the raw config tree: the ``edge`` object, then each ``edge.<path>`` override (shortest path first)."""
    if CONTEXT_KEY not in context:
        raise fail(CONTEXT_KEY, "no config found in the CDK context",
                   "run from the repository root (cdk.json holds the default config under \"edge\")")
    base = _parse_value(context[CONTEXT_KEY])
    if not isinstance(base, Mapping):
        raise fail(CONTEXT_KEY, f"expected a JSON object, got {type(base).__name__} {base!r}", "give an object {...}")
    tree = copy.deepcopy(dict(base))
    prefix = CONTEXT_KEY + "."
    overrides = sorted((k for k in context if k.startswith(prefix)), key=lambda k: (k.count("."), k))
    for key in overrides:
        _apply_override(tree, key[len(prefix):], _parse_value(context[key]))
    return tree


def load_config(context: Mapping[str, Any]) -> EdgeConfig:
    """Validate the CDK context mapping into an `EdgeConfig` (raises `ConfigError`)."""
    try:
        return EdgeConfig.model_validate(merge_context(context))
    except ValidationError as exc:
        raise config_error(EdgeConfig, exc) from None
