"""The checked-in JSON Schemas are generated from the models and current."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas.__main__ import main
from schemas.errors import SchemaDriftError
from schemas.jsonschema import JSON_DIR, MODELS, check_json_schemas, write_json_schemas


def test_checked_in_schemas_are_current() -> None:
    """Regenerating the schemas changes nothing (run `python -m schemas` if this fails)."""
    check_json_schemas()


def test_drift_is_detected(tmp_path: Path) -> None:
    """A stale or missing file makes the check fail, naming it."""
    write_json_schemas(tmp_path)
    check_json_schemas(tmp_path)
    (tmp_path / "alert.schema.json").write_text("{}\n")
    (tmp_path / "deadletter.schema.json").unlink()
    with pytest.raises(SchemaDriftError, match=r"alert\.schema\.json.*deadletter"):
        check_json_schemas(tmp_path)


def test_write_reports_only_changed_files(tmp_path: Path) -> None:
    """A second write is a no-op."""
    assert len(write_json_schemas(tmp_path)) == len(MODELS)
    assert write_json_schemas(tmp_path) == []


def test_schemas_describe_the_contract() -> None:
    """Audit events are open, alerts closed, and the alert requires its key fields."""
    audit = json.loads((JSON_DIR / "audit-event.schema.json").read_text())
    alert = json.loads((JSON_DIR / "alert.schema.json").read_text())
    assert audit["$schema"].endswith("2020-12/schema")
    assert audit.get("additionalProperties") is not False
    assert set(audit["required"]) == {"auditID", "stage", "verb"}
    assert alert["additionalProperties"] is False
    assert {"id", "rule", "severity", "cluster", "audit_id", "stage", "verb"} <= set(
        alert["required"]
    )
    assert "schema" in alert["properties"]


def test_cli_check_exits_zero_when_current(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m schemas --check` succeeds on the checked-in files."""
    assert main(["--check"]) == 0
    assert "current" in capsys.readouterr().out
