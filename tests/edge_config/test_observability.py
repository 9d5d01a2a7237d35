"""edge.observability: alarm settings validated at synth, with the field path and how to fix it."""
from __future__ import annotations

import pytest

from edge_config import ConfigError, load_config
from tests.test_edge_config import DEFAULT_CONTEXT


def test_a_zone_slo_must_be_a_histogram_bound():
    with pytest.raises(ConfigError, match=r"edge\.observability\.p99_latency_slo_s.*not a bound"):
        load_config({**DEFAULT_CONTEXT, "edge.observability.p99_latency_slo_s": 7})
    with pytest.raises(ConfigError, match=r"zone_p99_latency_slo_s.*not one of edge.local_zones"):
        load_config({**DEFAULT_CONTEXT, "edge.observability.zone_p99_latency_slo_s": {"us-west-2-den-1a": 5}})
    ok = load_config({**DEFAULT_CONTEXT, "edge.observability.zone_p99_latency_slo_s": {"us-west-2-lax-1a": 5}})
    assert ok.observability.slo_for("us-west-2-lax-1a") == 5.0


def test_alarm_emails_must_be_addresses():
    with pytest.raises(ConfigError, match=r"edge\.observability\.alarm_emails\[0\]: .*not an e-mail address"):
        load_config({**DEFAULT_CONTEXT, "edge.observability.alarm_emails": ["ops"]})
    ok = load_config({**DEFAULT_CONTEXT, "edge.observability.alarm_emails": ["ops@example.com"]})
    assert ok.observability.alarm_emails == ("ops@example.com",)


def test_log_retention_must_be_a_cloudwatch_period():
    with pytest.raises(ConfigError, match=r"edge\.observability\.log_retention_days.*retention period"):
        load_config({**DEFAULT_CONTEXT, "edge.observability.log_retention_days": 10})
