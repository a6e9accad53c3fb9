"""Rule, filter and correlation documents parsed into models, every problem reported at once.

Parsing only: single values are checked by :class:`detections.validation.Checker`, problems
across documents and lints by :mod:`detections.loader` and :mod:`detections.lints`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from detections import condition as cond
from detections.errors import Problem, suggest
from detections.fields import resolve_alias
from detections.matchers import MatchSpecError, compile_match, split_modifiers
from detections.rule import (
    CORRELATION_TYPES,
    GROUP_BY,
    LEVELS,
    META_KEYS,
    RELATED_TYPES,
    STATUSES,
    Correlation,
    FieldMatch,
    Filter,
    FixtureCase,
    GroupBy,
    KlaxonBlock,
    Rule,
    Selection,
    source_name,
)
from detections.validation import Checker
from detections.yamlsrc import Document, dotted
from detections.yamlsrc import Path as DocPath

RULE_KEYS = (
    *META_KEYS,
    "tags",
    "logsource",
    "detection",
    "fields",
    "falsepositives",
    "level",
    "related",
    "klaxon",
)
FILTER_KEYS = (*META_KEYS, "logsource", "filter")
CORRELATION_KEYS = (*META_KEYS, "tags", "falsepositives", "level", "correlation", "klaxon")
CORRELATION_BLOCK_KEYS = (
    "type",
    "rules",
    "group-by",
    "timespan",
    "condition",
    "generate",
    "aliases",
)
KLAXON_KEYS = ("summary", "mtmk", "tests", "group")
GROUP_KEYS = ("by", "window")
#: Bounds of ``klaxon.group.window``: a minute to a day.
GROUP_WINDOW_BOUNDS = (60, 86400)
TEST_KEYS = ("name", "expect", "event", "lists")
LOGSOURCE_KEYS = ("category", "product", "service", "definition")
CONDITION_OPS = ("gt", "gte", "lt", "lte", "eq", "neq", "field")

_SELECTION_NAME = re.compile(r"^[A-Za-z0-9_.\-*?]+$")
_MTMK = re.compile(r"^MS-TA\d{4}$")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_PLACEHOLDER_FIELD = re.compile(r"^[A-Za-z0-9_.\-/]+$")


def license_of(doc_license: str | None, file: str, packaged: bool) -> str | None:
    """The rule's license: its own, DRL for SigmaHQ rules, Apache-2.0 for our pack."""
    if doc_license:
        return doc_license
    if "sigmahq" in file.lower():
        return "DRL-1.1"
    return "Apache-2.0" if packaged else None


class DocumentParser(Checker):
    """Parses rule, filter and correlation documents into models (kept with their document)."""

    def __init__(self, lists: dict[str, tuple[Any, ...]], problems: list[Problem]) -> None:
        super().__init__(problems)
        self.lists = lists
        self.rules: list[tuple[Rule, Document, bool]] = []
        self.filters: list[tuple[Filter, Document]] = []
        self.correlations: list[tuple[Correlation, Document]] = []

    def add_rule(self, doc: Document, packaged: bool) -> None:
        m: dict[str, Any] = doc.value
        before = len(self.problems)
        if "action" in m:
            self.err(doc, ("action",), "Sigma rule collections (action: global) are not supported")
        self.check_keys(doc, m, RULE_KEYS, ())
        title = self.text(doc, m, "title", required=True)
        rule_id = self.rule_id(doc, m, required=True)
        level = self.choice(doc, m, "level", LEVELS)
        status = self.choice(doc, m, "status", STATUSES)
        logsource = self.logsource(doc, m)
        related = self.related(doc, m)
        klaxon = self.klaxon(doc, m)
        detection = m.get("detection")
        parsed = self.detection(doc, detection, ("detection",)) if detection is not None else None
        if detection is None:
            self.err(doc, (), "missing required key 'detection'")
        fields = self.text_list(doc, m, "fields")
        rule = None
        if parsed is not None and title is not None and rule_id is not None:
            selections, node, text = parsed
            file = doc.file
            rule = Rule(
                title=title,
                id=rule_id,
                detection=selections,
                condition=node,
                condition_text=text,
                file=file,
                line=doc.start[0],
                name=self.text(doc, m, "name"),
                status=status,
                description=self.text(doc, m, "description"),
                references=self.text_list(doc, m, "references"),
                author=self.text(doc, m, "author"),
                date=self.date(doc, m, "date"),
                modified=self.date(doc, m, "modified"),
                tags=self.text_list(doc, m, "tags"),
                logsource=logsource,
                fields=fields,
                falsepositives=self.text_list(doc, m, "falsepositives"),
                level=level,
                related=related,
                license=license_of(self.text(doc, m, "license"), file, packaged),
                klaxon=klaxon,
                source=source_name(file, "detections/rules/", under_root=packaged),
            )
        if rule is not None and len(self.problems) == before:
            self.rules.append((rule, doc, packaged))

    def logsource(self, doc: Document, m: Mapping[str, Any]) -> dict[str, str]:
        value = m.get("logsource")
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.err(doc, ("logsource",), "'logsource' must be a mapping", value=True)
            return {}
        self.check_keys(doc, value, LOGSOURCE_KEYS, ("logsource",))
        return {str(k): str(v) for k, v in value.items()}

    def related(self, doc: Document, m: Mapping[str, Any]) -> tuple[dict[str, str], ...]:
        value = m.get("related")
        if value is None:
            return ()
        if not isinstance(value, list):
            self.err(doc, ("related",), "'related' must be a list of {id, type}", value=True)
            return ()
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, dict) or "id" not in item or "type" not in item:
                self.err(doc, ("related", i), "each related entry needs 'id' and 'type'")
                continue
            self.check_keys(doc, item, ("id", "type"), ("related", i))
            if item["type"] not in RELATED_TYPES:
                self.err(
                    doc,
                    ("related", i, "type"),
                    f"invalid related type {item['type']!r}",
                    suggest(str(item["type"]), RELATED_TYPES),
                    value=True,
                )
            out.append({"id": str(item["id"]), "type": str(item["type"])})
        return tuple(out)

    def klaxon(self, doc: Document, m: Mapping[str, Any]) -> KlaxonBlock:
        block = m.get("klaxon")
        if block is None:
            return KlaxonBlock()
        if not isinstance(block, dict):
            self.err(doc, ("klaxon",), "'klaxon' must be a mapping", value=True)
            return KlaxonBlock()
        self.check_keys(doc, block, KLAXON_KEYS, ("klaxon",))
        summary = block.get("summary")
        if summary is not None:
            if not isinstance(summary, str):
                self.err(doc, ("klaxon", "summary"), "summary must be a string", value=True)
                summary = None
            else:
                self.check_summary(doc, summary)
        mtmk = self.text_list(doc, block, "mtmk")
        for i, tid in enumerate(mtmk):
            if not _MTMK.match(tid):
                self.err(
                    doc, ("klaxon", "mtmk", i), f"{tid!r} is not a Threat Matrix id like MS-TA9013"
                )
        tests: list[FixtureCase] = []
        raw_tests = block.get("tests", [])
        if not isinstance(raw_tests, list):
            self.err(doc, ("klaxon", "tests"), "tests must be a list", value=True)
            raw_tests = []
        for i, case in enumerate(raw_tests):
            path: DocPath = ("klaxon", "tests", i)
            if not isinstance(case, dict):
                self.err(doc, path, "a test must be a mapping with name, expect, event")
                continue
            self.check_keys(doc, case, TEST_KEYS, path)
            expect = case.get("expect")
            if expect not in ("hit", "miss"):
                self.err(
                    doc,
                    (*path, "expect"),
                    f"expect must be 'hit' or 'miss', got {expect!r}",
                    suggest(str(expect), ("hit", "miss")),
                    value=True,
                )
                continue
            event = case.get("event")
            if not isinstance(event, dict):
                self.err(doc, (*path, "event"), "event must be a mapping (a partial audit event)")
                continue
            name = case.get("name")
            tests.append(
                FixtureCase(
                    name=str(name) if name is not None else f"test {i + 1}",
                    expect=expect,
                    event=event,
                    line=doc.mark(path)[0],
                    lists=self.fixture_lists(doc, case.get("lists"), (*path, "lists")),
                )
            )
        group = self.group(doc, block.get("group"))
        return KlaxonBlock(summary=summary, mtmk=mtmk, tests=tuple(tests), group=group)

    def group(self, doc: Document, block: Any) -> GroupBy | None:
        """``klaxon.group``: ``by`` (a list of `GROUP_BY` names) and ``window`` (a duration)."""
        if block is None:
            return None
        path: DocPath = ("klaxon", "group")
        if not isinstance(block, dict):
            self.err(doc, path, "group must be a mapping with 'by' and/or 'window'", value=True)
            return None
        self.check_keys(doc, block, GROUP_KEYS, path)
        by = self.text_list(doc, block, "by", path)
        for i, name in enumerate(by):
            if name not in GROUP_BY:
                where = (*path, "by", i) if isinstance(block.get("by"), list) else (*path, "by")
                self.err(
                    doc,
                    where,
                    f"cannot group by {name!r}; expected one of {', '.join(GROUP_BY)}",
                    suggest(name, GROUP_BY),
                    value=True,
                )
        if len(set(by)) != len(by):
            self.err(doc, (*path, "by"), "group 'by' names a field twice", value=True)
        window = self.duration(doc, block, "window", path, "10m, 1h or 1d")
        low, high = GROUP_WINDOW_BOUNDS
        if window is not None and not low <= window <= high:
            self.err(
                doc, (*path, "window"), f"window must be between {low}s and {high}s", value=True
            )
            window = None
        return GroupBy(by=tuple(n for n in dict.fromkeys(by) if n in GROUP_BY), window=window)

    def fixture_lists(
        self, doc: Document, raw: Any, path: DocPath
    ) -> tuple[tuple[str, tuple[Any, ...]], ...]:
        """A test's ``lists:`` (named lists replaced for that test only, e.g. a filled-in
        ``cluster_networks``), as sorted pairs."""
        if raw is None:
            return ()
        if not isinstance(raw, dict):
            self.err(doc, path, "lists must map list names to lists of values", value=True)
            return ()
        out: list[tuple[str, tuple[Any, ...]]] = []
        for name, values in raw.items():
            if name not in self.lists:
                self.err(
                    doc,
                    (*path, str(name)),
                    f"unknown list '{name}'",
                    suggest(str(name), self.lists),
                )
            elif not isinstance(values, list) or any(isinstance(v, (dict, list)) for v in values):
                self.err(
                    doc, (*path, str(name)), "expected a list of strings or numbers", value=True
                )
            else:
                out.append((str(name), tuple(values)))
        return tuple(sorted(out))

    def check_summary(self, doc: Document, summary: str) -> None:
        stripped = _PLACEHOLDER.sub("", summary)
        if "{" in stripped or "}" in stripped:
            self.err(doc, ("klaxon", "summary"), "unbalanced '{' or '}' in summary", value=True)
        for m in _PLACEHOLDER.finditer(summary):
            name = m.group(1)
            if not _PLACEHOLDER_FIELD.match(name):
                self.err(
                    doc,
                    ("klaxon", "summary"),
                    f"placeholder {{{name}}} must be a plain field path like {{user.username}}",
                    value=True,
                )

    def detection(
        self, doc: Document, detection: Any, path: DocPath
    ) -> tuple[dict[str, Selection], cond.Node, str] | None:
        if not isinstance(detection, dict):
            self.err(
                doc, path, "'detection' must be a mapping of selections and a condition", value=True
            )
            return None
        ok = True
        selections: dict[str, Selection] = {}
        for name, body in detection.items():
            if name in ("condition", "rules"):
                continue
            sel = self.selection(doc, str(name), body, (*path, str(name)))
            if sel is None:
                ok = False
            else:
                selections[str(name)] = sel
        if "timeframe" in detection:
            ok = False  # reported by selection() as not a mapping; add the better hint
            self.err(
                doc,
                (*path, "timeframe"),
                "'timeframe' is Sigma v1; write a correlation document with 'timespan' instead",
            )
        raw = detection.get("condition")
        if raw is None:
            self.err(doc, path, "missing 'condition'")
            return None
        texts = raw if isinstance(raw, list) else [raw]
        names = [str(k) for k in detection if k not in ("condition", "rules")]
        nodes = []
        for i, text in enumerate(texts):
            cpath: DocPath = (
                (*path, "condition") if not isinstance(raw, list) else (*path, "condition", i)
            )
            if not isinstance(text, str):
                self.err(doc, cpath, "condition must be a string", value=True)
                ok = False
                continue
            if "|" in text:
                line, col = doc.mark(cpath, value=True)
                self.problems.append(
                    Problem(
                        doc.file,
                        line,
                        col + text.index("|"),
                        dotted(cpath),
                        "aggregations in conditions ('| count() ...') are Sigma v1; "
                        "write a correlation document instead",
                    )
                )
                ok = False
                continue
            try:
                nodes.append(cond.parse_condition(text, names))
            except cond.ConditionSyntaxError as exc:
                line, col = doc.mark(cpath, value=True)
                quoted = _quote_offset(doc, cpath)
                self.problems.append(
                    Problem(
                        doc.file,
                        line,
                        col + quoted + exc.column - 1,
                        dotted(cpath),
                        f"{exc.message} in condition {text!r}",
                        exc.suggestion,
                    )
                )
                ok = False
        if not ok or not nodes:
            return None
        node = nodes[0] if len(nodes) == 1 else cond.Or(tuple(nodes))
        return (
            selections,
            node,
            " or ".join(f"({t})" if len(texts) > 1 else t for t in texts if isinstance(t, str)),
        )

    def selection(self, doc: Document, name: str, body: Any, path: DocPath) -> Selection | None:
        if not _SELECTION_NAME.match(name):
            self.err(
                doc, path, f"selection name '{name}' may only use letters, digits, '_', '-', '.'"
            )
            return None
        line, col = doc.mark(path)
        if isinstance(body, dict):
            alt = self.field_map(doc, body, path)
            return None if alt is None else Selection(name, (alt,), line, col)
        if isinstance(body, list) and body and all(isinstance(b, dict) for b in body):
            alts = [self.field_map(doc, b, (*path, i)) for i, b in enumerate(body)]
            if any(a is None for a in alts):
                return None
            return Selection(name, tuple(a for a in alts if a is not None), line, col)
        if isinstance(body, list) and body and not any(isinstance(b, (dict, list)) for b in body):
            self.err(
                doc,
                path,
                "keyword (field-less) selections are not supported on audit events; "
                "name the field, e.g. 'requestURI|contains: [...]'",
            )
            return None
        self.err(
            doc,
            path,
            "a selection must be a mapping of fields (or a list of such mappings)",
            value=True,
        )
        return None

    def field_map(
        self, doc: Document, body: dict[str, Any], path: DocPath
    ) -> tuple[FieldMatch, ...] | None:
        if not body:
            self.err(doc, path, "empty selection (it would match every event)")
            return None
        out = []
        ok = True
        for raw_key, raw_value in body.items():
            key = str(raw_key)
            kpath = (*path, key)
            field, mods = split_modifiers(key)
            if not field:
                self.err(doc, kpath, "missing field name before '|'")
                ok = False
                continue
            values = tuple(raw_value) if isinstance(raw_value, list) else (raw_value,)
            canonical = resolve_alias(field)
            try:
                compile_match(canonical, mods, values, self.lists)
            except MatchSpecError as exc:
                where = (
                    (*kpath, exc.index)
                    if exc.index is not None and isinstance(raw_value, list)
                    else kpath
                )
                self.err(doc, where, exc.message, exc.suggestion, value=exc.index is not None)
                ok = False
                continue
            line, col = doc.mark(kpath)
            out.append(FieldMatch(key, field, canonical, mods, values, line, col))
        return tuple(out) if ok else None

    # -- filters and correlations --------------------------------------------------------------

    def add_filter(self, doc: Document) -> None:
        m: dict[str, Any] = doc.value
        before = len(self.problems)
        self.check_keys(doc, m, FILTER_KEYS, ())
        title = self.text(doc, m, "title", required=True)
        fid = self.rule_id(doc, m, required=False)
        self.logsource(doc, m)
        block = m["filter"]
        if not isinstance(block, dict):
            self.err(
                doc, ("filter",), "'filter' must be a mapping with rules, selections, condition"
            )
            return
        targets = self.text_list(doc, block, "rules")
        if not targets:
            self.err(doc, ("filter",), "a filter needs 'rules': the ids or names it applies to")
        parsed = self.detection(doc, block, ("filter",))
        if parsed is None or title is None or len(self.problems) != before:
            return
        selections, node, text = parsed
        self.filters.append(
            (
                Filter(
                    title=title,
                    id=fid,
                    rules=targets,
                    detection=selections,
                    condition=node,
                    condition_text=text,
                    file=doc.file,
                    line=doc.start[0],
                    name=self.text(doc, m, "name"),
                ),
                doc,
            )
        )

    def add_correlation(self, doc: Document) -> None:
        m: dict[str, Any] = doc.value
        before = len(self.problems)
        self.check_keys(doc, m, CORRELATION_KEYS, ())
        title = self.text(doc, m, "title", required=True)
        cid = self.rule_id(doc, m, required=False)
        level = self.choice(doc, m, "level", LEVELS)
        self.choice(doc, m, "status", STATUSES)
        klaxon = self.klaxon(doc, m)
        if klaxon.group is not None:
            self.err(
                doc,
                ("klaxon", "group"),
                "group applies to detection rules; a correlation already alerts once per group",
            )
        block = m["correlation"]
        if not isinstance(block, dict):
            self.err(doc, ("correlation",), "'correlation' must be a mapping", value=True)
            return
        self.check_keys(doc, block, CORRELATION_BLOCK_KEYS, ("correlation",))
        ctype = (
            self.choice(doc, block, "type", CORRELATION_TYPES, ("correlation",))
            if "type" in block
            else None
        )
        if "type" not in block:
            self.err(
                doc,
                ("correlation",),
                "missing 'type' (event_count, value_count, temporal, temporal_ordered)",
            )
        targets = self.text_list(doc, block, "rules")
        if not targets:
            self.err(doc, ("correlation",), "missing 'rules': the rules this correlation counts")
        group_by = self.text_list(doc, block, "group-by")
        span = block.get("timespan")
        seconds = self.duration(doc, block, "timespan", ("correlation",), "5m, 1h or 30s")
        if span is None:
            self.err(
                doc,
                ("correlation", "timespan"),
                "timespan None must look like 5m, 1h or 30s",
                value=True,
            )
        condition = block.get("condition")
        if ctype in ("event_count", "value_count"):
            if not isinstance(condition, dict) or not condition:
                self.err(doc, ("correlation",), f"{ctype} needs a 'condition' such as {{gte: 10}}")
                condition = {}
            else:
                for key, val in condition.items():
                    if key not in CONDITION_OPS:
                        self.err(
                            doc,
                            ("correlation", "condition", str(key)),
                            f"unknown condition operator '{key}'",
                            suggest(str(key), CONDITION_OPS),
                        )
                    elif key != "field" and (
                        isinstance(val, bool) or not isinstance(val, (int, float))
                    ):
                        self.err(
                            doc,
                            ("correlation", "condition", str(key)),
                            "expected a number",
                            value=True,
                        )
                if ctype == "value_count" and "field" not in condition:
                    self.err(
                        doc,
                        ("correlation", "condition"),
                        "value_count needs 'field' in its condition",
                    )
        elif condition is not None and not isinstance(condition, dict):
            self.err(doc, ("correlation", "condition"), "condition must be a mapping", value=True)
        generate = block.get("generate", False)
        if not isinstance(generate, bool):
            self.err(doc, ("correlation", "generate"), "generate must be true or false", value=True)
        if len(self.problems) != before or title is None or ctype is None:
            return
        self.correlations.append(
            (
                Correlation(
                    title=title,
                    id=cid,
                    type=ctype,
                    rules=targets,
                    group_by=group_by,
                    timespan_seconds=seconds or 0,
                    timespan=str(span),
                    condition=dict(condition or {}),
                    generate=bool(generate),
                    file=doc.file,
                    line=doc.start[0],
                    name=self.text(doc, m, "name"),
                    level=level,
                    tags=self.text_list(doc, m, "tags"),
                    description=self.text(doc, m, "description"),
                    author=self.text(doc, m, "author"),
                    falsepositives=self.text_list(doc, m, "falsepositives"),
                    klaxon=klaxon,
                ),
                doc,
            )
        )

    # -- cross-document checks -----------------------------------------------------------------


def _quote_offset(doc: Document, path: DocPath) -> int:
    """1 when the scalar at ``path`` is written in quotes (its text starts one column later)."""
    return 1 if tuple(path) in doc.quoted else 0
