"""The serving dashboard's body as CloudWatch will receive it, read from a synthesized OperationsStack template.

The body is an Fn::Join of JSON text and CloudFormation references (alarm ARNs, rule names). Each reference is
replaced by a readable stand-in such as ``<AlarmsTopic.Arn>``, which keeps the body valid JSON, stable across
unrelated changes and reviewable in a snapshot.
"""
from __future__ import annotations

import json
from typing import Any


def _stand_in(part: Any, region: str | None) -> str:
    if isinstance(part, str):
        return part
    if part == {"Ref": "AWS::Region"} and region:
        return region
    if "Ref" in part:
        return f"<{part['Ref']}>"
    if "Fn::GetAtt" in part:
        return f"<{'.'.join(part['Fn::GetAtt'])}>"
    raise ValueError(f"unexpected token in the dashboard body: {part!r}")


def dashboard_body(template: dict, name_suffix: str = "-serving", region: str | None = None) -> dict:
    """The body of the template's one AWS::CloudWatch::Dashboard whose name ends with ``name_suffix``; ``region``
    stands for the AWS::Region pseudo parameter, which CloudFormation resolves at deploy time."""
    found = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::CloudWatch::Dashboard"
             and str(r["Properties"].get("DashboardName", "")).endswith(name_suffix)]
    if len(found) != 1:
        raise ValueError(f"expected one dashboard named *{name_suffix}, found {len(found)}")
    body = found[0]["DashboardBody"]
    if isinstance(body, dict):
        delimiter, parts = body["Fn::Join"]
        body = delimiter.join(_stand_in(p, region) for p in parts)
    return json.loads(body)


def metric_entries(body: dict) -> list[tuple[dict, list]]:
    """(widget, entry) for every entry of every metric widget, with '.' shorthand expanded."""
    out = []
    for widget in body["widgets"]:
        previous: list = []
        for entry in widget["properties"].get("metrics", []) if widget["type"] == "metric" else []:
            expanded = [previous[i] if item == "." and i < len(previous) else item for i, item in enumerate(entry)]
            out.append((widget, expanded))
            previous = expanded
    return out
