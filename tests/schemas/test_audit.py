"""The canonical audit event model and its field paths."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas import FREE_FORM_PREFIXES, AuditEvent, field_paths
from schemas.audit import is_known_path
from schemas.normalize import decode_payload

MINIMAL = {"auditID": "a-1", "stage": "ResponseComplete", "verb": "get"}


def test_field_paths_cover_every_documented_audit_field() -> None:
    """field_paths lists the nested audit.k8s.io/v1 fields the rule linter must know."""
    expected = {
        "level", "auditID", "stage", "requestURI", "verb", "user", "user.username", "user.uid",
        "user.groups", "user.extra", "impersonatedUser.username", "sourceIPs", "userAgent",
        "objectRef.resource", "objectRef.namespace", "objectRef.name", "objectRef.uid",
        "objectRef.apiGroup", "objectRef.apiVersion", "objectRef.resourceVersion",
        "objectRef.subresource", "responseStatus.code", "responseStatus.status",
        "responseStatus.reason", "responseStatus.message", "requestObject", "responseObject",
        "requestReceivedTimestamp", "stageTimestamp", "annotations", "cluster",
    }  # fmt: skip
    assert expected <= field_paths()


def test_field_paths_do_not_invent_paths() -> None:
    """Misspelt or free-form-internal paths are not model paths."""
    assert "objectRef.nme" not in field_paths()
    assert "requestObject.spec" not in field_paths()
    assert all(p.split(".")[0] in AuditEvent.model_fields for p in field_paths())


def test_free_form_prefixes_are_model_paths() -> None:
    """Every free-form prefix names a field of the model, and paths below it are known."""
    assert set(FREE_FORM_PREFIXES) <= field_paths()
    assert is_known_path("requestObject.spec.containers.image")
    assert is_known_path("annotations.authorization.k8s.io/decision")
    assert not is_known_path("requestObjectX.spec")


def test_model_is_tolerant_of_unknown_fields() -> None:
    """Unknown top-level and nested fields are kept, not rejected."""
    ev = AuditEvent.model_validate(
        {**MINIMAL, "metadata": {"creationTimestamp": "x"}, "user": {"username": "u", "x": 1}}
    )
    dumped = ev.model_dump()
    assert dumped["metadata"] == {"creationTimestamp": "x"}
    assert dumped["user"]["x"] == 1


@pytest.mark.parametrize("api_version", ["audit.k8s.io/v1", "audit.k8s.io/v1beta1", None])
def test_model_accepts_v1_v1beta1_and_missing_api_version(api_version: str | None) -> None:
    """Old and version-less events validate."""
    raw = dict(MINIMAL) if api_version is None else {**MINIMAL, "apiVersion": api_version}
    assert AuditEvent.model_validate(raw).auditID == "a-1"


@pytest.mark.parametrize(
    "stage", ["RequestReceived", "ResponseStarted", "ResponseComplete", "Panic"]
)
def test_model_accepts_every_stage(stage: str) -> None:
    """All four audit stages validate, including ResponseStarted (exec/attach)."""
    assert AuditEvent.model_validate({**MINIMAL, "stage": stage}).stage == stage


def test_model_rejects_an_unknown_stage_and_missing_verb() -> None:
    """The required contract matches the normaliser's: auditID, stage, verb."""
    with pytest.raises(ValidationError):
        AuditEvent.model_validate({**MINIMAL, "stage": "Done"})
    with pytest.raises(ValidationError):
        AuditEvent.model_validate({"auditID": "a", "stage": "Panic"})


def test_every_decoded_corpus_event_validates(corpus: Path) -> None:
    """Whatever decode_payload emits for real data is a valid AuditEvent."""
    files = [
        *sorted((corpus / "falco-k8s-audit-traces").glob("*.json")),
        *sorted((corpus / "formats").glob("*.json")),
        *sorted((corpus / "elastic-integrations-kubernetes-audit").glob("*.log")),
    ]
    count = 0
    for path in files:
        for event in decode_payload(path.read_bytes()).events:
            model = AuditEvent.model_validate(event)
            assert model.apiVersion == "audit.k8s.io/v1"
            count += 1
    assert count >= 60
