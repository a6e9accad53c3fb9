"""The dead-letter message: raw input Klaxon could not use, kept byte-exact for inspection.

>>> d = dead_letter("not JSON", b"\\x00oops", topic="klaxon.audit.raw", partition=0, offset=7,
...                 at=datetime(2026, 1, 2, tzinfo=UTC))
>>> d["original_b64"], d["source"], d["at"]
('AG9vcHM=', {'topic': 'klaxon.audit.raw', 'partition': 0, 'offset': 7}, '2026-01-02T00:00:00Z')
>>> original_bytes(DeadLetter.model_validate(d))
b'\\x00oops'
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class DeadLetterSource(BaseModel):
    """Where the unusable message was read from."""

    model_config = ConfigDict(extra="forbid")

    topic: str
    partition: int | None = None
    offset: int | None = None


class DeadLetter(BaseModel):
    """One unusable item: why, where from, and its original bytes (base64)."""

    model_config = ConfigDict(
        extra="forbid",
        title="KlaxonDeadLetter",
        json_schema_extra={"$id": "https://klaxon.dev/schemas/deadletter.schema.json"},
    )

    reason: str
    source: DeadLetterSource | None = None
    original_b64: str = Field(description="Standard base64 of the original bytes.")
    at: datetime = Field(description="When Klaxon dead-lettered it (UTC).")


def dead_letter(
    reason: str,
    original: bytes,
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """Build a `DeadLetter`-shaped dict (what the pipeline serialises to the topic)."""
    when = (at or datetime.now(UTC)).astimezone(UTC)
    source = None if topic is None else {"topic": topic, "partition": partition, "offset": offset}
    return {
        "reason": reason,
        "source": source,
        "original_b64": base64.b64encode(original).decode("ascii"),
        "at": when.isoformat().replace("+00:00", "Z"),
    }


def original_bytes(letter: DeadLetter) -> bytes:
    """The original bytes of a dead letter."""
    return base64.b64decode(letter.original_b64, validate=True)
