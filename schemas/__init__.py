"""Klaxon's data contracts: the canonical audit event, alerts, dead letters, normalisation.

`schemas` imports nothing else from Klaxon. The hot path uses `schemas.normalize.decode_payload`
(plain dicts); the pydantic models here document and validate the shapes.
"""

from __future__ import annotations

from schemas.alert import Alert, Severity
from schemas.audit import FREE_FORM_PREFIXES, AuditEvent, field_paths
from schemas.deadletter import DeadLetter
from schemas.errors import SchemaError

__all__ = [
    "FREE_FORM_PREFIXES",
    "Alert",
    "AuditEvent",
    "DeadLetter",
    "SchemaError",
    "Severity",
    "field_paths",
]
