"""The conversion targets: a pySigma backend, the target's field names, what it can search.

To add a target: a :class:`Target` in :data:`TARGETS` (a pySigma backend class, a function
from raw audit path to the target's field name, and whether it searches inside lists).

>>> splunk_name("requestObject.spec.containers.securityContext.capabilities.add")
'requestObject.spec.containers{}.securityContext.capabilities.add{}'
>>> kusto_name("annotations.authorization.k8s.io/decision")
"Annotations['authorization.k8s.io/decision']"
>>> kusto_name("objectRef.resource"), kusto_name("verb")
('ObjectRef.resource', 'Verb')
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from sigma.backends.elasticsearch.elasticsearch_lucene import LuceneBackend
from sigma.backends.kusto.kusto import KustoBackend
from sigma.backends.splunk.splunk import SplunkBackend
from sigma.conditions import ConditionFieldEqualsValueExpression
from sigma.conversion.state import ConversionState
from sigma.processing.pipeline import ProcessingPipeline
from sigma.types import SigmaBool

from detections.convert.fields import MAP_PARENTS, list_prefixes
from detections.convert.pipeline import klaxon_pipeline
from detections.convert.sqlite import KlaxonSQLiteBackend

#: The SQLite target's table (:func:`detections.convert.sqlite.make_table` builds it).
SQLITE_TABLE = "klaxon_audit"


@dataclass(frozen=True)
class Target:
    """A conversion target: its backend, its names for raw paths, what it can search."""

    name: str
    description: str
    backend: Callable[[ProcessingPipeline], Any]
    field_name: Callable[[str], str] = str
    lists: bool = True  # searches inside lists (multi-valued fields)
    outside_lists: bool = False  # tests list elements one by one (|outside over a list)
    expressible: frozenset[str] = frozenset()  # derived fields it can compute itself
    group_by: frozenset[str] = frozenset()  # ... and group correlations by
    table: str | None = None
    wrap: Callable[[str], str] = str  # the backend's query -> the query to run
    prefixable: bool = False  # its field names may sit under a prefix (--field-prefix)

    def with_prefix(self, prefix: str) -> Target:
        """This target with every field name under ``prefix`` (``kubernetes.audit.`` where a
        shipper nests the audit event); ValueError for targets with fixed names."""
        if not prefix:
            return self
        if not self.prefixable:
            raise ValueError(f"the {self.name} target's field names cannot take a prefix")
        name = self.field_name
        return replace(self, field_name=lambda path: prefix + name(path))

    def pipeline(self) -> ProcessingPipeline:
        """The Klaxon processing pipeline for this target."""
        return klaxon_pipeline(
            self.name,
            self.field_name,
            expressible=self.expressible,
            lists=self.lists,
            outside_lists=self.outside_lists,
            table=self.table,
        )


def splunk_name(path: str) -> str:
    """Splunk's JSON field name: ``{}`` after every list (as ``spath`` extracts them)."""
    for prefix in sorted(list_prefixes(path), key=len, reverse=True):
        path = prefix + "{}" + path[len(prefix) :]
    return path


#: Columns of Azure Monitor's ``AKSAudit`` table for the top-level audit fields.
AKS_AUDIT_COLUMNS = {
    "auditID": "AuditId",
    "level": "Level",
    "stage": "Stage",
    "verb": "Verb",
    "requestURI": "RequestUri",
    "userAgent": "UserAgent",
    "user": "User",
    "impersonatedUser": "ImpersonatedUser",
    "sourceIPs": "SourceIps",
    "objectRef": "ObjectRef",
    "responseStatus": "ResponseStatus",
    "requestObject": "RequestObject",
    "responseObject": "ResponseObject",
    "annotations": "Annotations",
    # Klaxon's derived sourceIP, which KQL can compute
    "sourceIP": "tostring(SourceIps[0])",
}

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def kusto_name(path: str) -> str:
    """A KQL expression for a raw path on ``AKSAudit``: a column, then dynamic member access."""
    head, _, rest = path.partition(".")
    column = AKS_AUDIT_COLUMNS.get(head, head)
    if not rest:
        return column
    parts = rest.split(".")
    out = column
    for i, part in enumerate(parts):
        parent = head if i == 0 else parts[i - 1]
        if parent in MAP_PARENTS:
            key = ".".join(parts[i:])
            return out + f"['{key}']"
        out += f".{part}" if _IDENTIFIER.match(part) else f"['{part}']"
    return out


class _UnquotedKusto(KustoBackend):
    """Kusto with Klaxon's field expressions written as they are (they are KQL already)."""

    def escape_and_quote_field(self, field_name: str) -> str:
        return field_name

    def convert_condition_field_eq_val_bool(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        """``==`` for booleans (the backend's ``=~`` is KQL's string comparison)."""
        value = cond.value
        assert isinstance(value, SigmaBool)
        return f"{cond.field} == {self.bool_values[value.boolean]}"


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "splunk",
            "Splunk SPL over audit events indexed as JSON (spath names, lists as {})",
            SplunkBackend,
            field_name=splunk_name,
            prefixable=True,
        ),
        Target(
            "elasticsearch",
            "Elasticsearch Lucene over audit events indexed with their own field paths",
            LuceneBackend,
            prefixable=True,
        ),
        Target(
            "kusto",
            "KQL over Azure Monitor's AKSAudit table (dynamic columns; lists not searched)",
            _UnquotedKusto,
            field_name=kusto_name,
            lists=False,
            expressible=frozenset({"sourceIP"}),
            group_by=frozenset({"sourceIP"}),
            wrap=lambda q: f"AKSAudit\n| where {q}",
        ),
        Target(
            "sqlite",
            "SQLite over Klaxon's leaves table (one JSON-array column per raw path)",
            KlaxonSQLiteBackend,
            outside_lists=True,
            expressible=frozenset({"sourceIP"}),
            table=SQLITE_TABLE,
        ),
    )
}
