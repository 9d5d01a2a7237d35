"""cfn-lint over every template of the synthesized cloud assembly: zero errors (warnings are reported, not fatal)."""
from __future__ import annotations

from pathlib import Path

from cfnlint.api import ManualArgs, lint_file

EXPECTED_STACKS = {"EdgeClusterStack", "ImagePipelineStack", "OperationsStack"}


def test_every_template_lints_without_errors(cloud_assembly):
    region = cloud_assembly.stacks[0].environment.region
    templates = {stack.stack_name: Path(cloud_assembly.directory) / stack.template_file
                 for stack in cloud_assembly.stacks}
    assert set(templates) == EXPECTED_STACKS
    failures = []
    for name, path in sorted(templates.items()):
        matches = lint_file(path, ManualArgs(regions=[region]))
        failures += [f"{name}: {m.rule.id} {m.message} ({m.path_string})" for m in matches
                     if m.rule.id.startswith("E")]
    assert not failures, "\n".join(failures)


def test_the_lint_catches_a_broken_template(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"Resources": {"Queue": {"Type": "AWS::SQS::Queue", '
                      '"Properties": {"MessageRetentionPeriod": "forever"}}}}')
    ids = {m.rule.id for m in lint_file(broken, ManualArgs(regions=["us-west-2"]))}
    assert any(i.startswith("E") for i in ids), ids
