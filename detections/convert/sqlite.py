"""The SQLite target: pySigma's SQLite backend over Klaxon's leaves table.

A flat table cannot say "any element of a list matches", which is what the engine (and
Splunk's and Elasticsearch's multi-valued fields) mean. So the table has one row per audit
event and one column per raw dotted path, holding the JSON array of every value found at
that path (lists crossed, as :func:`detections.convert.fields.leaves` finds them). The
backend wraps each comparison as ``EXISTS (SELECT 1 FROM json_each(column) WHERE …)``:
any element; under ``NOT``, none. ``sourceIP`` (the first of ``sourceIPs``) is element 0;
``|outside`` over a list is ``EXISTS (… WHERE type = 'text' AND NOT (…))``.
Comparisons are case-insensitive (Sigma's default) except ``|cased`` (``GLOB``) and ``|re``;
``REGEXP`` needs :func:`connect`'s function.

>>> conn = connect()
>>> make_table(conn, "audit", [{"verb": "create", "user": {"groups": ["Admins", "dev"]}}])
>>> conn.execute("SELECT `user.groups` FROM audit").fetchone()[0]
'["Admins","dev"]'
"""

from __future__ import annotations

import copy
import json
import re
import sqlite3
from collections.abc import Sequence
from typing import Any

from sigma.backends.sqlite.sqlite import sqliteBackend
from sigma.conditions import ConditionFieldEqualsValueExpression, ConditionOR
from sigma.conversion.state import ConversionState
from sigma.exceptions import SigmaFeatureNotSupportedByBackendError
from sigma.types import SigmaExists, SigmaNull

from detections.convert.fields import leaves, split_mark

#: The name a comparison uses for one element of a column (``json_each``'s value column).
ELEMENT = "value"

#: Derived fields that are the first element of a raw column (``json_each``'s key 0).
FIRST_OF = {"sourceIP": "sourceIPs"}


class KlaxonSQLiteBackend(sqliteBackend):
    """pySigma's SQLite backend, each comparison over the elements of a leaves column."""

    name = "Klaxon SQLite backend (leaves table)"
    #: Event time for temporal correlations: the first (only) value of its leaves column.
    timestamp_field = "json_extract(`stageTimestamp`, '$[0]')"

    def escape_and_quote_field(self, field_name: str) -> str:
        if field_name == ELEMENT:
            return f"{ELEMENT} COLLATE NOCASE"
        return str(super().escape_and_quote_field(field_name))

    def convert_condition_field_eq_val(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> Any:
        if cond.field == ELEMENT:
            return super().convert_condition_field_eq_val(cond, state)
        field, mark = split_mark(cond.field)
        if mark:  # |outside over a list: some text element matches none of the values
            return self._exists(
                field, f"type = 'text' AND NOT ({self._element(cond, state)})", state
            )
        value = cond.value
        # `field: null` and `|exists: false`: no element with a value (absent, or all null)
        negate = isinstance(value, SigmaNull) or (
            isinstance(value, SigmaExists) and not value.exists
        )
        expr = self._exists(field, self._element(cond, state, negate), state)
        return f"NOT {expr}" if negate else expr

    def convert_condition_or(self, cond: ConditionOR, state: ConversionState) -> Any:
        """An OR over the values of one ``|outside`` item is one test of each element."""
        args = [a for a in cond.args if isinstance(a, ConditionFieldEqualsValueExpression)]
        fields = {a.field for a in args}
        field = fields.pop() if len(fields) == 1 and len(args) == len(cond.args) else None
        if field is None or not split_mark(field)[1]:
            return super().convert_condition_or(cond, state)
        inner = " OR ".join(f"({self._element(arg, state)})" for arg in args)
        return self._exists(split_mark(field)[0], f"type = 'text' AND NOT ({inner})", state)

    def _element(
        self,
        cond: ConditionFieldEqualsValueExpression,
        state: ConversionState,
        exists: bool = False,
    ) -> str:
        """The comparison of ``cond`` on one element (``value``) of its column."""
        inner = copy.copy(cond)  # keeps its parent and source
        inner.field = ELEMENT
        if exists:
            inner.value = SigmaExists(True)
        return str(super().convert_condition_field_eq_val(inner, state))

    def _exists(self, field: str, where: str, state: ConversionState) -> str:
        """Whether some element of ``field``'s column satisfies ``where``."""
        table = state.processing_state.get("table", self.table)
        column = super().escape_and_quote_field(FIRST_OF.get(field, field))
        if field in FIRST_OF:
            where = f"key = 0 AND ({where})"
        return f"EXISTS (SELECT 1 FROM json_each({table}.{column}) WHERE {where})"

    def convert_condition_field_eq_field(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> Any:
        raise SigmaFeatureNotSupportedByBackendError(
            "'fieldref' compares two multi-valued columns; not written for the leaves table"
        )


def connect(path: str = ":memory:") -> sqlite3.Connection:
    """A connection with the ``REGEXP`` function the backend's ``|re`` needs (Python ``re``)."""
    conn = sqlite3.connect(path)
    cache: dict[str, re.Pattern[str]] = {}

    def regexp(pattern: str, value: Any) -> bool:
        if value is None:
            return False
        compiled = cache.get(pattern)
        if compiled is None:
            compiled = cache[pattern] = re.compile(pattern)
        return compiled.search(str(value)) is not None

    conn.create_function("REGEXP", 2, regexp, deterministic=True)
    return conn


def make_table(conn: sqlite3.Connection, table: str, events: Sequence[dict[str, Any]]) -> None:
    """Create ``table`` (one row per event, one JSON-array column per raw path) and fill it."""
    rows = [leaves(event) for event in events]
    columns = sorted({path for row in rows for path in row})
    quoted = ", ".join(_quote(c) for c in columns)
    conn.execute(f"CREATE TABLE {table} (klaxon_row INTEGER PRIMARY KEY, {quoted})")
    marks = ", ".join("?" for _ in columns)
    conn.executemany(
        f"INSERT INTO {table} (klaxon_row, {quoted}) VALUES (?, {marks})",
        [
            (
                i,
                *(
                    json.dumps(row[c], separators=(",", ":"), default=str) if c in row else None
                    for c in columns
                ),
            )
            for i, row in enumerate(rows)
        ],
    )


def run_query(conn: sqlite3.Connection, table: str, sql: str) -> set[int]:
    """The rows a converted query selects; columns no event has are added (as NULL) first."""
    while True:
        try:
            return {row[0] for row in conn.execute(sql.replace("SELECT *", "SELECT klaxon_row", 1))}
        except sqlite3.OperationalError as exc:
            missing = str(exc).partition("no such column: ")[2]
            if not missing:
                raise
            column = missing.removeprefix(f"{table}.")
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {_quote(column)}")


def _quote(column: str) -> str:
    return "`" + column.replace("`", "``") + "`"
