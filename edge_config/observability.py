"""The operator's view: metric collection, the per-cluster dashboard and the alarms (docs/operations.md)."""
from __future__ import annotations

from typing import Annotated, Mapping

from pydantic import Field, field_validator

from edge_config.errors import FieldProblem, Hint
from edge_config.fields import Section, email_list

# The server's request-latency histogram bounds in seconds (serving's LATENCY_BUCKETS; a test reads them back from a
# live server). A p99 SLO must be one of them: the alarm asks "did more than 1% of requests take longer than the
# bound", which the cumulative bucket counters answer exactly only at a bound.
LATENCY_BUCKET_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _bound(value: float, at: tuple = ()) -> float:
    if float(value) not in LATENCY_BUCKET_BOUNDS:
        raise FieldProblem(f"{value} s is not a bound of the server's latency histogram",
                           f"pick one of {list(LATENCY_BUCKET_BOUNDS)}", at)
    return float(value)


class ObservabilityConfig(Section):
    """Collection of the serving metrics into CloudWatch, the cluster's dashboard and its alarms."""

    alarm_emails: Annotated[tuple[str, ...], Hint(noun="e-mail address")] = Field(
        (), description="Addresses subscribed to the alarm topic (each confirms by e-mail); empty: subscribe "
                        "something to the topic's ARN (stack output AlarmTopicArn) yourself.")
    p99_latency_slo_s: float = Field(10.0, description="p99 request latency above which a zone's latency alarm "
                                     "fires; a bound of the server's latency histogram.")
    zone_p99_latency_slo_s: Mapping[str, float] = Field(
        {}, description="Per Local Zone override of p99_latency_slo_s, keyed by zone name.")
    error_rate_percent: float = Field(5.0, gt=0, le=100, description="Share of 5xx answers (probes excluded) in a "
                                      "zone over 5 minutes that fires the 5xx alarm.")
    certificate_expiry_days: int = Field(14, ge=1, le=60, description="Alarm when a pod's serving certificate "
                                         "expires within this many days (cert-manager renews at two thirds of "
                                         "its lifetime, so this means renewal is stuck).")
    accelerator_errors: int = Field(3, ge=1, le=1000, description="Accelerator errors or out-of-memory answers "
                                    "in a zone within 15 minutes that fire the accelerator alarm.")
    scrape_interval_s: int = Field(60, ge=15, le=300, description="How often the collector scrapes each pod's "
                                   "metrics port; the dashboard's period follows it.")
    log_retention_days: Annotated[int, Hint("use a CloudWatch Logs retention: 1, 3, 5, 7, 14, 30, 60 or 90")] = (
        Field(14, description="Retention of the collector's embedded-metric-format log group (the metrics "
                              "themselves keep CloudWatch's own retention)."))

    @field_validator("alarm_emails")
    @classmethod
    def _emails(cls, emails: tuple[str, ...]) -> tuple[str, ...]:
        return email_list(emails)

    @field_validator("p99_latency_slo_s")
    @classmethod
    def _slo(cls, value: float) -> float:
        return _bound(value)

    @field_validator("zone_p99_latency_slo_s")
    @classmethod
    def _zone_slos(cls, slos: Mapping[str, float]) -> Mapping[str, float]:
        return {zone: _bound(value, (zone,)) for zone, value in slos.items()}

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, days: int) -> int:
        if days not in (1, 3, 5, 7, 14, 30, 60, 90):
            raise FieldProblem(f"{days} is not a CloudWatch Logs retention period", "use 1, 3, 5, 7, 14, 30, 60 or 90")
        return days

    def slo_for(self, zone: str) -> float:
        return self.zone_p99_latency_slo_s.get(zone, self.p99_latency_slo_s)
