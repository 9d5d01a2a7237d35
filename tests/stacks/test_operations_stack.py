"""OperationsStack: the dashboard body (snapshot, CloudWatch's body structure, consistency with the collection) and
the alarms."""
from __future__ import annotations

import json
import re

import jsonschema
import pytest
from syrupy.extensions.json import JSONSnapshotExtension

from charts import observability as obs
from edge_config import load_config
from tests.conftest import REPO_ROOT
from tests.test_edge_config import DEFAULT_CONTEXT
from tools.dashboard_body import dashboard_body, metric_entries

CONFIG = load_config(DEFAULT_CONTEXT)
BODY_SCHEMA = json.loads((REPO_ROOT / "schemas" / "cloudwatch" / "dashboard-body.schema.json").read_text())
SEARCH = re.compile(r"SEARCH\('\{([^}]*)\}\s*MetricName=\"([^\"]+)\"")


@pytest.fixture(scope="module")
def template(templates) -> dict:
    return templates["OperationsStack"]


@pytest.fixture(scope="module")
def body(template) -> dict:
    return dashboard_body(template, region=CONFIG.region)


def of_type(template: dict, cfn_type: str) -> dict[str, dict]:
    return {lid: r for lid, r in template["Resources"].items() if r["Type"] == cfn_type}


def named_metrics(body: dict) -> list[tuple[str, str, frozenset[str]]]:
    """(namespace, metric, dimension names) of every metric a widget names, directly or in a SEARCH."""
    found = []
    for _, entry in metric_entries(body):
        rendering = entry[-1] if isinstance(entry[-1], dict) else {}
        if "expression" in rendering:
            for schema, name in SEARCH.findall(rendering["expression"]):
                namespace, *dims = [part.strip() for part in schema.split(",")]
                found.append((namespace, name, frozenset(dims)))
        else:
            plain = [item for item in entry if isinstance(item, str)]
            found.append((plain[0], plain[1], frozenset(plain[2::2])))
    return found


def undeclared(found: list[tuple[str, str, frozenset[str]]]) -> list[str]:
    """Serving metrics (or dimension sets) that the collection does not publish."""
    published = obs.dimension_sets()
    return [f"{name} by {sorted(dims)}" for namespace, name, dims in found
            if namespace == obs.NAMESPACE and (name, dims) not in published]


def alarm_metrics(template: dict) -> list[tuple[str, str, frozenset[str]]]:
    found = []
    for alarm in of_type(template, "AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        stats = [q["MetricStat"]["Metric"] for q in props.get("Metrics", []) if "MetricStat" in q]
        if "MetricName" in props:
            stats.append(props)
        found += [(m["Namespace"], m["MetricName"], frozenset(d["Name"] for d in m.get("Dimensions", [])))
                  for m in stats]
    return found


def test_dashboard_body_snapshot(body, snapshot):
    assert body == snapshot(extension_class=JSONSnapshotExtension)


def test_dashboard_body_has_cloudwatchs_structure(body):
    jsonschema.Draft202012Validator(BODY_SCHEMA).validate(body)
    for widget in body["widgets"]:
        assert widget["x"] + widget["width"] <= 24, widget["properties"].get("title")


def test_the_body_schema_refuses_what_cloudwatch_would(body):
    validator = jsonschema.Draft202012Validator(BODY_SCHEMA)
    broken = json.loads(json.dumps(body))
    metric_widget = next(w for w in broken["widgets"] if w["type"] == "metric")
    metric_widget["properties"]["veiw"] = "timeSeries"
    del broken["widgets"][0]["properties"]["markdown"]
    assert len(list(validator.iter_errors(broken))) == 2


def test_every_dashboard_metric_and_dimension_is_one_the_collection_publishes(body):
    found = named_metrics(body)
    assert {name for ns, name, _ in found if ns == obs.NAMESPACE} >= {
        "RequestCount", "LatencyBucket", "QueueWaitBucket", "StreamFrames", "StreamFramesDropped", "StreamsActive",
        "QueueDepth", "Ready", "StreamRefused", "EagerFallback", "PoolNodes", "CertificateExpirySeconds"}
    assert not undeclared(found)


def test_the_consistency_check_catches_an_unpublished_dimension_or_metric():
    bad = {"widgets": [{"type": "metric", "properties": {"region": "us-west-2", "metrics": [
        [obs.NAMESPACE, "RequestCount", obs.CLUSTER, "c", "Instance", "i"],
        [{"expression": f"SEARCH('{{{obs.NAMESPACE},{obs.CLUSTER}}} MetricName=\"Latency\"', 'Sum', 60)"}],
    ]}}]}
    assert undeclared(named_metrics(bad)) == ["RequestCount by ['ClusterName', 'Instance']",
                                              "Latency by ['ClusterName']"]


def test_every_alarm_metric_is_published(template):
    found = alarm_metrics(template)
    assert {name for ns, name, _ in found if ns == obs.NAMESPACE} == {
        "LatencyBucket", "RequestCount", "Ready", "AcceleratorErrors", "CertificateExpirySeconds"}
    assert not undeclared(found)


def test_dashboard_has_the_panels_the_operator_needs(body):
    titles = [w["properties"].get("title", "") for w in body["widgets"]]
    for zone in CONFIG.local_zones:
        assert f"Latency p50/p99 by route (s): {zone.name}" in titles
    for needle in ("Requests/s by route and zone", "Stream frames/s", "Active streams", "Queue wait p99",
                   "Queue depth", "Answers/s by status", "Refusals", "Compile fallbacks", "Ready endpoints",
                   "Nodes per NodePool", "GPU utilisation", "NeuronCore utilisation", "Image pipeline runs",
                   "certificate"):
        assert any(needle in t for t in titles), needle
    assert body["widgets"][1]["type"] == "alarm"


def test_percentile_expression_interpolates_inside_the_crossing_bucket():
    """Evaluate the generated metric-math text with Python for known bucket counts."""
    import aws_cdk as cdk
    from aws_cdk import aws_cloudwatch as cw

    from edge_constructs.serving_dashboard import fmt, quantile

    bounds = (0.1, 0.5, 1.0)
    counts = {"0.1": 10.0, "0.5": 60.0, "1.0": 100.0, "+Inf": 100.0}  # cumulative, per minute
    metrics = {le: cw.Metric(namespace="n", metric_name="m") for le in counts}
    expr = quantile(0.5, metrics, bounds, "t", "p50", cdk.Duration.minutes(1))
    ids = {f"tb{i}": counts[le] for i, le in enumerate([*(fmt(b) for b in bounds), "+Inf"])}

    def evaluate(text: str) -> float:
        py = text.replace("AND", "and")
        py = re.sub(r"IF\(", "_if(", py)
        return eval(py, {"_if": lambda c, a, b=None: a if c else (0 if b is None else b)}, ids)  # noqa: S307

    # 50 of 100 requests: inside (0.1, 0.5], 40 of the bucket's 50 -> 0.1 + 0.4 * 0.8
    assert evaluate(expr.expression) == pytest.approx(0.42)
    ids["tb3"] = 200.0  # half the requests above the last bound: the estimate is that bound
    assert evaluate(expr.expression) == pytest.approx(1.0)


def test_alarms_notify_an_encrypted_topic_with_the_configured_subscriptions(template, templates):
    topic = next(iter(of_type(template, "AWS::SNS::Topic").values()))
    assert "KmsMasterKeyId" in topic["Properties"]
    assert not of_type(template, "AWS::SNS::Subscription")
    for alarm in of_type(template, "AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        assert props["AlarmActions"] and props["OKActions"]
        assert "docs/operations.md" in props["AlarmDescription"]


def test_zone_alarms_follow_the_config(template):
    alarms = {a["Properties"]["AlarmName"]: a["Properties"]
              for a in of_type(template, "AWS::CloudWatch::Alarm").values()}
    zone = CONFIG.local_zones[0].name
    latency = alarms[f"{CONFIG.cluster_name} {zone}: p99 latency above 10 s"]
    buckets = {d["Value"] for q in latency["Metrics"] if "MetricStat" in q
               for d in q["MetricStat"]["Metric"]["Dimensions"] if d["Name"] == obs.LE}
    assert buckets == {"10.0", "+Inf"}
    assert latency["Threshold"] == 0.01 and latency["ComparisonOperator"] == "GreaterThanThreshold"
    ready = alarms[f"{CONFIG.cluster_name} {zone}: no ready endpoint"]
    assert ready["TreatMissingData"] == "breaching" and ready["Statistic"] == "Maximum"
    expiry = alarms[f"{CONFIG.cluster_name} {zone}: serving certificate expires within 14 days"]
    assert expiry["Threshold"] == 14 * 86400
    assert f"{CONFIG.cluster_name}: image pipeline run failed" in alarms


def test_pipeline_rules_watch_the_pipeline_object(template, templates):
    rules = of_type(template, "AWS::Events::Rule")
    assert {json.dumps(r["Properties"]["EventPattern"]["detail"]) for r in rules.values()} == {
        '{"state": ["SUCCEEDED"]}', '{"state": ["FAILED"]}'}
    for rule in rules.values():
        (resource,) = rule["Properties"]["EventPattern"]["resources"]
        # The ImagePipelineStack's pipeline, passed as an object: CDK wires its name across the stacks.
        assert "ImagePipelineStack" in json.dumps(resource)


def test_no_module_path_leaks_into_the_body(body):
    assert "Token[" not in json.dumps(body)
