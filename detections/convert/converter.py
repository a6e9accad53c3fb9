"""Convert a loaded rule set for one target: a query per rule, or why it cannot be converted.

>>> from detections import load_rules
>>> rs = load_rules([], texts={"r.yml": '''
... title: Privileged pod
... id: 0b0c8f9e-2a8e-4a53-9d0b-6f1d2f3f4a5b
... logsource: {product: kubernetes, service: audit}
... detection:
...   sel: {verb: create, podSpec.hostPID: true, response.success: true}
...   condition: sel
... '''})
>>> print(convert_ruleset(rs, "splunk").outcomes[0].query)
verb="create" requestObject.spec.hostPID=true OR requestObject.spec.template.spec.hostPID=true \
OR requestObject.spec.jobTemplate.spec.template.spec.hostPID=true OR \
requestObject.template.spec.hostPID=true responseStatus.code<400
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError
from sigma.filters import SigmaFilter
from sigma.rule import SigmaRule

from detections.convert.fields import no_raw_equivalent
from detections.convert.sigma import NotConvertible, to_sigma
from detections.convert.targets import TARGETS, Target
from detections.rule import Correlation, Rule, RuleSet


@dataclass(frozen=True, slots=True)
class Outcome:
    """One rule or correlation for one target: its query, or the reason there is none."""

    kind: str  # "rule" | "correlation"
    id: str
    title: str
    file: str
    query: str | None = None
    reason: str | None = None

    @property
    def converted(self) -> bool:
        """Whether a query was written."""
        return self.query is not None


@dataclass(frozen=True, slots=True)
class Report:
    """Every outcome of one target."""

    target: str
    outcomes: tuple[Outcome, ...]

    @property
    def converted(self) -> tuple[Outcome, ...]:
        """The outcomes with a query."""
        return tuple(o for o in self.outcomes if o.converted)

    @property
    def refused(self) -> tuple[Outcome, ...]:
        """The outcomes with a reason instead."""
        return tuple(o for o in self.outcomes if not o.converted)

    def reasons(self) -> dict[str, list[Outcome]]:
        """Refused outcomes grouped by the kind of reason (the text before its first ': '),
        most frequent first."""
        groups: dict[str, list[Outcome]] = defaultdict(list)
        for o in self.refused:
            groups[(o.reason or "unknown").split(": ", 1)[0]].append(o)
        return dict(sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])))


def convert_ruleset(ruleset: RuleSet, target: str | Target, *, field_prefix: str = "") -> Report:
    """Convert every rule and correlation of ``ruleset`` for ``target`` (a name in TARGETS),
    field names under ``field_prefix`` (Splunk and Elasticsearch only)."""
    tgt = (TARGETS[target] if isinstance(target, str) else target).with_prefix(field_prefix)
    docs: dict[str, dict[str, Any] | NotConvertible] = {}
    outcomes = []
    for rule in ruleset.rules:
        outcome, doc = convert_rule(rule, ruleset, tgt)
        docs[rule.id] = doc
        if rule.name:
            docs[rule.name] = doc
        outcomes.append(outcome)
    outcomes += [_convert_correlation(c, docs, tgt) for c in ruleset.correlations]
    return Report(tgt.name, tuple(outcomes))


def convert_rule(
    rule: Rule, ruleset: RuleSet, target: Target
) -> tuple[Outcome, dict[str, Any] | NotConvertible]:
    """One rule of ``ruleset`` (its filters and lists applied): the outcome, and the Sigma
    document it was converted from (or why there is none)."""
    base = Outcome("rule", rule.id, rule.title, rule.file)
    try:
        doc = to_sigma(rule, ruleset.filters_for(rule), ruleset.lists)
    except NotConvertible as exc:
        return _refused(base, exc.reason), exc
    try:
        queries = target.backend(target.pipeline()).convert_rule(SigmaRule.from_dict(doc))
    except (SigmaError, NotImplementedError) as exc:
        return _refused(base, reason_of(exc)), doc
    return _with_query(base, target, queries), doc


def _convert_correlation(
    corr: Correlation, docs: dict[str, dict[str, Any] | NotConvertible], target: Target
) -> Outcome:
    base = Outcome("correlation", corr.id or corr.name or corr.title, corr.title, corr.file)
    counted = [
        *corr.group_by,
        *([str(corr.condition["field"])] if "field" in corr.condition else []),
    ]
    for name in counted:
        reason = no_raw_equivalent(name)
        if reason is not None and name not in target.group_by:
            return _refused(base, f"no raw equivalent: group-by or counted field {reason}")
    bases = []
    for ref in corr.rules:
        doc = docs.get(ref)
        if doc is None:
            return _refused(base, f"refers to '{ref}', which is not a converted rule")
        if isinstance(doc, NotConvertible):
            return _refused(base, f"its rule '{ref}' cannot be converted: {doc.reason}")
        bases.append({**doc, "name": ref})
    correlation: dict[str, Any] = {
        "type": corr.type,
        "rules": list(corr.rules),
        "timespan": corr.timespan,
        "generate": False,  # the rules' own queries are written on their own
    }
    if corr.group_by:
        correlation["group-by"] = list(corr.group_by)
    if corr.condition:
        correlation["condition"] = dict(corr.condition)
    doc = {
        "title": corr.title,
        "id": corr.id,
        "name": corr.name,
        "correlation": correlation,
        "level": corr.level or "medium",
    }
    try:
        members: list[SigmaRule | SigmaCorrelationRule | SigmaFilter] = [
            SigmaRule.from_dict(b) for b in bases
        ]
        members.append(
            SigmaCorrelationRule.from_dict({k: v for k, v in doc.items() if v is not None})
        )
        collection = SigmaCollection(members)
        queries = target.backend(target.pipeline()).convert(collection)
    except (SigmaError, NotImplementedError) as exc:
        return _refused(base, reason_of(exc))
    return _with_query(base, target, queries)


def _refused(base: Outcome, reason: str) -> Outcome:
    return Outcome(base.kind, base.id, base.title, base.file, reason=reason)


def _with_query(base: Outcome, target: Target, queries: list[Any]) -> Outcome:
    query = "\n".join(target.wrap(str(q)) for q in queries)
    return Outcome(base.kind, base.id, base.title, base.file, query=query)


def reason_of(exc: BaseException) -> str:
    """A one-line reason from a pySigma error (without its rule location)."""
    text = str(exc.args[0]) if exc.args else str(exc) or type(exc).__name__
    return " ".join(_WHILE.sub("", text).split())


_WHILE = re.compile(r"\s*\(while converting rule [^)]*\)")
