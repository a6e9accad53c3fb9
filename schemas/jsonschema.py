"""JSON Schemas generated from the models, checked in under `schemas/json/`.

Regenerate with ``python -m schemas`` (or `write_json_schemas()`); ``python -m schemas
--check`` exits 1 when a checked-in file is stale (the test suite checks the same).

>>> sorted(render_json_schemas())
['alert.schema.json', 'audit-event.schema.json', 'deadletter.schema.json']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from schemas.alert import Alert
from schemas.audit import AuditEvent
from schemas.deadletter import DeadLetter
from schemas.errors import SchemaDriftError

JSON_DIR = Path(__file__).resolve().parent / "json"
DRAFT = "https://json-schema.org/draft/2020-12/schema"
MODELS: dict[str, type[BaseModel]] = {
    "audit-event.schema.json": AuditEvent,
    "alert.schema.json": Alert,
    "deadletter.schema.json": DeadLetter,
}


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of `model`, as validated input (by alias)."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": DRAFT, **schema}


def render_json_schemas() -> dict[str, bytes]:
    """File name -> exact file content (sorted keys, 2-space indent, trailing newline)."""
    opts = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
    return {name: orjson.dumps(json_schema(m), option=opts) + b"\n" for name, m in MODELS.items()}


def write_json_schemas(directory: Path = JSON_DIR) -> list[Path]:
    """Write every schema file into `directory`; returns the paths that changed."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, content in render_json_schemas().items():
        path = directory / name
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)
            changed.append(path)
    return changed


def check_json_schemas(directory: Path = JSON_DIR) -> None:
    """Raise `SchemaDriftError` naming every stale or missing schema file."""
    stale = [
        name
        for name, content in render_json_schemas().items()
        if not (directory / name).exists() or (directory / name).read_bytes() != content
    ]
    if stale:
        raise SchemaDriftError(
            f"stale JSON Schemas in {directory}: {', '.join(stale)} (run: python -m schemas)"
        )
