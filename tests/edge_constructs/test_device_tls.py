"""DeviceTls in the synthesized EdgeClusterStack: the pinned cert-manager chart with values its own schema accepts,
apply order, and (acme) Route 53 rights scoped to one zone through Pod Identity."""
from __future__ import annotations

import json

import versions
from tests.helm_values import check_release
from tests.k8s_schema import validate_k8s_object
from tools.render_manifests import MANIFEST_TYPE, extract_helm_releases, extract_manifests

ZONE_ID = "Z0123456789ABCDEFGHIJ"
ACME = {"tls__mode": "acme", "tls__acme__hosted_zone_id": ZONE_ID, "tls__acme__hosted_zone_name": "example.com"}


def _resource_ids(template: dict, cfn_type: str, needle: str) -> list[str]:
    return [lid for lid, r in template["Resources"].items() if r["Type"] == cfn_type and needle in json.dumps(r)]


def _policy_statements(template: dict, role_needle: str) -> list[dict]:
    [role_id] = [lid for lid, r in template["Resources"].items()
                 if r["Type"] == "AWS::IAM::Role" and role_needle in json.dumps(r["Properties"].get("Description", ""))]
    statements = []
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in resource["Properties"]["Roles"]:
            statements.extend(resource["Properties"]["PolicyDocument"]["Statement"])
    return statements


def _zone_arn(statement: dict) -> str:
    return json.dumps(statement["Resource"])


def test_cert_manager_chart_is_pinned_and_its_values_pass_the_helm_values_gate(cluster_template):
    release = extract_helm_releases(cluster_template())["CertManager"]
    assert (release["repository"], release["chart"], release["version"]) == versions.CERT_MANAGER_CHART
    assert release["namespace"] == "cert-manager"
    # Keys known to the chart at the pinned version and accepted by its values.schema.json, as helm would check.
    assert check_release(release) == []
    assert release["values"]["crds"] == {"enabled": True, "keep": True}


def test_issuers_follow_cert_manager_and_the_workloads_follow_the_issuers(cluster_template):
    template = cluster_template()
    groups = extract_manifests(template)
    for obj in groups["TlsIssuers"]:
        validate_k8s_object(obj)
    [chart_id] = [lid for lid, r in template["Resources"].items()
                  if r["Type"] == "Custom::AWSCDK-EKS-HelmChart" and r["Properties"]["Release"] == "cert-manager"]
    manifests = {lid: r for lid, r in template["Resources"].items() if r["Type"] == MANIFEST_TYPE}
    [issuers_id] = [lid for lid, r in manifests.items() if "edge-diffusion-selfsigned" in json.dumps(r)]
    assert chart_id in manifests[issuers_id]["DependsOn"]
    [inference_id] = [lid for lid, r in manifests.items() if "inference-tls" in json.dumps(r)
                      and "Deployment" in json.dumps(r)]
    assert issuers_id in manifests[inference_id]["DependsOn"]
    assert template["Resources"][chart_id]["Properties"]["Wait"] is True
    # private-ca needs no AWS rights at all.
    assert not _resource_ids(template, "AWS::IAM::Policy", "route53")


def test_plaintext_mode_installs_no_cert_manager(cluster_template):
    template = cluster_template(tls__mode="off", tls__allow_plaintext_nodeport=True)
    assert "CertManager" not in extract_helm_releases(template)
    assert "TlsIssuers" not in extract_manifests(template)


def test_acme_rights_are_scoped_to_the_one_zone(cluster_template):
    template = cluster_template(**ACME)
    zone = f":route53:::hostedzone/{ZONE_ID}"

    solver = _policy_statements(template, "cert-manager DNS-01")
    by_action = {json.dumps(s["Action"]): s for s in solver}
    change = by_action['"route53:ChangeResourceRecordSets"']
    assert zone in _zone_arn(change)
    assert change["Condition"] == {"ForAllValues:StringEquals": {
        "route53:ChangeResourceRecordSetsRecordTypes": ["TXT"],
        "route53:ChangeResourceRecordSetsNormalizedRecordNames": ["_acme-challenge.nodes.example.com"]}}
    assert zone in _zone_arn(by_action['"route53:ListResourceRecordSets"'])
    assert ":route53:::change/*" in _zone_arn(by_action['"route53:GetChange"'])
    assert len(solver) == 3

    dns = _policy_statements(template, "external-dns")
    writes = [s for s in dns if s["Action"] == "route53:ChangeResourceRecordSets"]
    assert len(writes) == 1 and zone in _zone_arn(writes[0])
    assert writes[0]["Condition"]["ForAllValues:StringLike"] == {
        "route53:ChangeResourceRecordSetsNormalizedRecordNames": ["*.nodes.example.com"]}
    unscoped = [s for s in dns if s["Resource"] == "*"]
    assert [s["Action"] for s in unscoped] == ["route53:ListHostedZones"]
    for statement in solver + dns:
        assert statement["Effect"] == "Allow"
        assert all(a.startswith("route53:") for a in ([statement["Action"]] if isinstance(statement["Action"], str)
                                                       else statement["Action"]))

    associations = {(r["Properties"]["Namespace"], r["Properties"]["ServiceAccount"])
                    for r in template["Resources"].values() if r["Type"] == "AWS::EKS::PodIdentityAssociation"}
    assert {("cert-manager", "cert-manager"), ("external-dns", "external-dns")} <= associations
    for obj in extract_manifests(template)["NodeDns"]:
        validate_k8s_object(obj)


def test_acme_synthesizes_cdk_nag_clean(tmp_path):
    """The default synth runs cdk-nag on private-ca only; the acme roles get their own run."""
    from app import build_app

    context = {"edge.admin_principal_arn": "arn:aws:iam::123456789012:role/Admin"}
    context.update({"edge." + key.replace("__", "."): value for key, value in ACME.items()})
    app = build_app(context, outdir=str(tmp_path))
    app.synth()  # raises ValidationFailed on any unacknowledged finding
    report = json.loads((tmp_path / "validation-report.json").read_text()) if (
        tmp_path / "validation-report.json").exists() else {"pluginReports": []}
    assert not [v for r in report["pluginReports"] for v in r["violations"]]
