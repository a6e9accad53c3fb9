"""Checks of single values in rule documents, each reported as a positioned :class:`Problem`.

Shared by every document kind (rules, filters, correlations, new terms detectors), so a
mistake reads the same wherever it is made: ``file:line:col: key: message (did you mean …)``.

>>> from detections.yamlsrc import load_documents
>>> doc = load_documents("title: t\\nlevle: high\\nttl: 3 days\\n", "x.yml")[0]
>>> problems = []
>>> check = Checker(problems)
>>> check.check_keys(doc, doc.value, ("title", "level", "ttl"), ())
>>> check.duration(doc, doc.value, "ttl", (), "30m, 12h or 7d")
>>> print("\\n".join(str(p) for p in problems))
x.yml:2:1: levle: unknown top-level key 'levle' (did you mean 'level'?)
x.yml:3:6: ttl: ttl '3 days' must look like 30m, 12h or 7d
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from detections.errors import Problem, suggest
from detections.yamlsrc import Document
from detections.yamlsrc import Path as DocPath

_DURATION = re.compile(r"^(\d+)([smhdwMy])$")
#: Seconds per duration unit: s, m, h, d, w, M (30 days), y (365 days).
DURATION_UNITS = {
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 604800,
    "M": 2592000,
    "y": 31536000,
}
_SIGMA_DATE = re.compile(r"^\d{4}[-/]\d{2}[-/]\d{2}$")


def parse_duration(text: Any) -> int | None:
    """Seconds for a Sigma duration (``30s``, ``5m``, ``1h``, ``7d``, ``2w``, ``1M``, ``1y``).

    >>> parse_duration("90m"), parse_duration("1M"), parse_duration("soon")
    (5400, 2592000, None)
    """
    m = _DURATION.match(str(text))
    return int(m.group(1)) * DURATION_UNITS[m.group(2)] if m else None


class Checker:
    """Value checks over one load's documents, appending :class:`Problem` s to ``problems``."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems

    def err(
        self,
        doc: Document,
        path: DocPath,
        msg: str,
        hint: str | None = None,
        *,
        value: bool = False,
    ) -> None:
        """Report a problem at ``path``'s key (or its value with ``value=True``)."""
        self.problems.append(doc.problem(path, msg, hint, value=value))

    def text(
        self,
        doc: Document,
        m: Mapping[str, Any],
        key: str,
        *,
        required: bool = False,
        prefix: DocPath = (),
    ) -> str | None:
        """A scalar as text; None (and a problem if required) when missing or not a scalar."""
        value = m.get(key)
        if value is None:
            if required:
                self.err(doc, prefix, f"missing required key '{key}'")
            return None
        if isinstance(value, (dict, list)):
            self.err(doc, (*prefix, key), f"'{key}' must be a string", value=True)
            return None
        return str(value)

    def text_list(
        self, doc: Document, m: Mapping[str, Any], key: str, prefix: DocPath = ()
    ) -> tuple[str, ...]:
        """A string or list of scalars as a tuple of texts."""
        value = m.get(key)
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list) or any(isinstance(v, (dict, list)) for v in value):
            self.err(doc, (*prefix, key), f"'{key}' must be a list of strings", value=True)
            return ()
        return tuple(str(v) for v in value)

    def check_keys(
        self, doc: Document, m: Mapping[str, Any], allowed: Sequence[str], prefix: DocPath
    ) -> None:
        """Report every key of ``m`` that is not ``allowed``, with the closest allowed one."""
        for key in m:
            if key not in allowed:
                what = "top-level key" if not prefix else "key"
                self.err(
                    doc, (*prefix, str(key)), f"unknown {what} '{key}'", suggest(str(key), allowed)
                )

    def choice(
        self,
        doc: Document,
        m: Mapping[str, Any],
        key: str,
        allowed: Sequence[str],
        prefix: DocPath = (),
    ) -> str | None:
        """One of ``allowed`` (or None when absent)."""
        value = m.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or value not in allowed:
            self.err(
                doc,
                (*prefix, key),
                f"invalid {key} {value!r}; expected one of {', '.join(allowed)}",
                suggest(str(value), allowed),
                value=True,
            )
            return None
        return value

    def date(self, doc: Document, m: Mapping[str, Any], key: str) -> str | None:
        """A Sigma date (``YYYY-MM-DD`` or ``YYYY/MM/DD``) in ISO form."""
        value = m.get(key)
        if value is None:
            return None
        if isinstance(value, dt.date):
            return value.isoformat()
        if isinstance(value, str) and _SIGMA_DATE.match(value):
            try:
                return dt.date(int(value[:4]), int(value[5:7]), int(value[8:10])).isoformat()
            except ValueError:
                pass
        self.err(doc, (key,), f"invalid {key} {value!r}; expected YYYY-MM-DD", value=True)
        return None

    def rule_id(self, doc: Document, m: Mapping[str, Any], *, required: bool) -> str | None:
        """A UUID ``id``."""
        value = m.get("id")
        if value is None:
            if required:
                self.err(doc, (), "missing required key 'id' (a UUID, e.g. from `uuidgen`)")
            return None
        try:
            uuid.UUID(str(value))
        except ValueError:
            self.err(doc, ("id",), f"id {value!r} is not a UUID", value=True)
            return None
        return str(value)

    def duration(
        self, doc: Document, m: Mapping[str, Any], key: str, prefix: DocPath, examples: str
    ) -> int | None:
        """Seconds of a duration (see :func:`parse_duration`); None when absent or invalid."""
        value = m.get(key)
        seconds = parse_duration(value) if value is not None else None
        if value is not None and seconds is None:
            self.err(doc, (*prefix, key), f"{key} {value!r} must look like {examples}", value=True)
        return seconds

    def positive_int(
        self, doc: Document, m: Mapping[str, Any], key: str, prefix: DocPath, default: int
    ) -> int:
        """A positive integer, ``default`` when absent (or invalid, with a problem)."""
        value = m.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.err(doc, (*prefix, key), f"{key} must be a positive integer", value=True)
            return default
        return value
