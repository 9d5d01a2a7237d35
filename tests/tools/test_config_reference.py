"""The committed JSON Schema and docs table match the config models, and the schema accepts cdk.json's config."""
from __future__ import annotations

import json

import jsonschema

from tests.conftest import REPO_ROOT
from tools import config_reference


def test_committed_schema_is_current():
    assert config_reference.SCHEMA_PATH.read_text() == config_reference.schema_text(), "run `make schema`"


def test_docs_field_table_is_current():
    current = config_reference.DOCS_PATH.read_text()
    assert current == config_reference.docs_text(current), "run `make schema`"


def test_check_mode_reports_a_hand_edited_table(tmp_path, monkeypatch, capsys):
    edited = config_reference.DOCS_PATH.read_text().replace("| `region` |", "| `regoin` |", 1)
    docs = tmp_path / "cluster.md"
    docs.write_text(edited)
    monkeypatch.setattr(config_reference, "DOCS_PATH", docs)
    monkeypatch.setattr(config_reference, "ROOT", tmp_path.parent)
    assert config_reference.main(["--check"]) == 1
    assert "cluster.md is stale" in capsys.readouterr().err


def test_schema_accepts_the_default_config_and_rejects_typos():
    schema = json.loads(config_reference.SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    config = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]["edge"]
    assert list(validator.iter_errors(config)) == []
    config["workloads"]["node_prot"] = 30090
    assert [e.message for e in validator.iter_errors(config)] == [
        "Additional properties are not allowed ('node_prot' was unexpected)"]
