"""EdgeCluster: who can reach the cluster."""
from __future__ import annotations

from tests.conftest import ADDONS_VARIANT


def test_no_admin_principal_warns_at_synth_how_to_add_one(cluster_warnings):
    warnings = [w for w in cluster_warnings() if "admin_principal_arn" in w]
    assert len(warnings) == 1, cluster_warnings()
    assert "-c edge.admin_principal_arn=arn:aws:iam::" in warnings[0]
    assert "aws eks create-access-entry" in warnings[0]


def test_an_admin_principal_silences_the_warning(cluster_warnings):
    warnings = cluster_warnings(**ADDONS_VARIANT)
    assert not [w for w in warnings if "admin_principal_arn" in w]
