"""Lints of the fields a document reads: aliases, unknown fields, comparisons that never hold."""

from __future__ import annotations

import re
from collections.abc import Iterator

from detections.errors import suggest
from detections.fields import ALIASES, NUMERIC_FIELDS, is_known_field, resolve_alias
from detections.lints.base import Context, Finding, Subject
from detections.rule import FieldMatch
from detections.yamlsrc import Path as DocPath

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_PLACEHOLDER_FIELD = re.compile(r"^[A-Za-z0-9_.\-/]+$")


def field_matches(subject: Subject) -> Iterator[tuple[DocPath, FieldMatch]]:
    """Every comparison of the document's selections, with its path."""
    for sel in subject.selections.values():
        for ai, alt in enumerate(sel.alternatives):
            for fm in alt:
                path: DocPath = (*subject.base, sel.name)
                if len(sel.alternatives) > 1:
                    path = (*path, ai)
                yield (*path, fm.key), fm


def alias(subject: Subject, context: Context) -> Iterator[Finding]:
    """A field written as an alias: say which canonical field it reads."""
    for path, fm in field_matches(subject):
        if fm.field in ALIASES:
            yield path, f"'{fm.field}' is an alias; it is read from {fm.path}", fm.path


def unknown_field(subject: Subject, context: Context) -> Iterator[Finding]:
    """A field (in a selection, a summary placeholder or a detector's fields) the audit event
    schema does not have: most likely a typo that never matches."""
    for path, fm in field_matches(subject):
        if fm.field not in ALIASES and not is_known_field(fm.path, context.known):
            yield (
                path,
                f"field '{fm.field}' is not in the audit event schema",
                suggest(fm.field, context.known),
            )
    for m in _PLACEHOLDER.finditer(subject.summary or ""):
        name = m.group(1)
        if _PLACEHOLDER_FIELD.match(name) and not is_known_field(
            resolve_alias(name), context.known
        ):
            yield (
                ("klaxon", "summary"),
                f"summary placeholder {{{name}}} is not a known field",
                suggest(name, context.known),
            )
    for path, name in subject.fields:
        if not is_known_field(resolve_alias(name), context.known):
            yield (
                path,
                f"field '{name}' is not in the audit event schema",
                suggest(name, context.known),
            )


def never_matches(subject: Subject, context: Context) -> Iterator[Finding]:
    """A text compared with a numeric field (``responseStatus.code: ALLOW``)."""
    for path, fm in field_matches(subject):
        if fm.path in NUMERIC_FIELDS and not fm.modifiers:
            for v in fm.values:
                if isinstance(v, str) and not _numeric_text(v):
                    yield (
                        path,
                        f"{fm.path} is a number; {v!r} can never match "
                        "(the authorization decision is the derived field 'decision')",
                        f"decision: {v.lower()}",
                    )


def _numeric_text(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True
