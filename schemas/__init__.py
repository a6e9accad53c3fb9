"""Klaxon's data contracts: the canonical audit event, alerts, dead letters, normalisation.

`schemas` imports nothing else from Klaxon. The hot path uses `schemas.normalize.decode_payload`
(plain dicts); the pydantic models here document and validate the shapes. The names below are
imported on first use, so that light modules (`schemas.keys`) do not load pydantic for a
command that needs none (``klaxon status`` is the liveness probe).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from schemas.native import extend

__path__ = extend(__name__, __path__)  # compiled modules first, when current

if TYPE_CHECKING:
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

_HOME = {
    "FREE_FORM_PREFIXES": "schemas.audit",
    "Alert": "schemas.alert",
    "AuditEvent": "schemas.audit",
    "DeadLetter": "schemas.deadletter",
    "SchemaError": "schemas.errors",
    "Severity": "schemas.alert",
    "field_paths": "schemas.audit",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'schemas' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
