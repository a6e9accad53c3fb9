"""Load Sigma rule files into a validated :class:`RuleSet`, reporting every problem at once.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "r.yml").write_text('''
... title: Exec into a pod
... id: 0b0c8f9e-2a8e-4a53-9d0b-6f1d2f3f4a5b
... level: medium
... tags: [attack.execution, attack.t1609]
... logsource: {product: kubernetes, service: audit}
... detection:
...   selection: {verb: create, objectRef.subresource: exec}
...   condition: selection
... ''')
>>> rs = load_rules([d])
>>> [r.title for r in rs.rules]
['Exec into a pod']
"""

from __future__ import annotations

import datetime as dt
import os
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from detections import condition as cond
from detections.errors import Lint, Problem, RuleLoadError, suggest
from detections.fields import (
    ALIASES,
    NUMERIC_FIELDS,
    is_known_field,
    known_field_paths,
    resolve_alias,
)
from detections.index import constraints, disjoint
from detections.lists import load_lists
from detections.matchers import MatchSpecError, compile_match, split_modifiers
from detections.rule import (
    CORRELATION_TYPES,
    LEVELS,
    META_KEYS,
    RELATED_TYPES,
    STATUSES,
    Correlation,
    FieldMatch,
    Filter,
    FixtureCase,
    KlaxonBlock,
    Rule,
    RuleSet,
    Selection,
    source_name,
)
from detections.yamlsrc import Document, YamlProblems, dotted, load_documents
from detections.yamlsrc import Path as DocPath

PACKAGED_RULES = Path(__file__).resolve().parent / "rules"

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
KLAXON_KEYS = ("summary", "mtmk", "tests")
TEST_KEYS = ("name", "expect", "event")
LOGSOURCE_KEYS = ("category", "product", "service", "definition")
CONDITION_OPS = ("gt", "gte", "lt", "lte", "eq", "neq", "field")

_SELECTION_NAME = re.compile(r"^[A-Za-z0-9_.\-*?]+$")
_MTMK = re.compile(r"^MS-TA\d{4}$")
_TIMESPAN = re.compile(r"^(\d+)([smhdwMy])$")
_TIMESPAN_SECONDS = {
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 604800,
    "M": 2592000,
    "y": 31536000,
}
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_PLACEHOLDER_FIELD = re.compile(r"^[A-Za-z0-9_.\-/]+$")
_SIGMA_DATE = re.compile(r"^\d{4}[-/]\d{2}[-/]\d{2}$")


def rule_files(paths: Iterable[str | os.PathLike[str]], problems: list[Problem]) -> list[Path]:
    """Expand files and folders (recursively, ``*.yml``/``*.yaml``) into a sorted file list."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(
                sorted(q for q in p.rglob("*") if q.suffix in (".yml", ".yaml") and q.is_file())
            )
        elif p.is_file():
            out.append(p)
        else:
            problems.append(Problem(str(p), 0, 0, "", "no such file or folder"))
    return out


def load_rules(
    paths: Iterable[str | os.PathLike[str]] | None = None,
    lists: Iterable[str | os.PathLike[str]] = (),
    *,
    texts: Mapping[str, str] | None = None,
) -> RuleSet:
    """Load rules (default: the packaged folder) with the packaged plus user lists.

    ``texts`` maps display names to YAML text (for tests and editors) and is loaded after paths.
    Raises :class:`RuleLoadError` listing every problem of every file.
    """
    problems: list[Problem] = []
    named_lists = load_lists(lists, problems)
    sources: list[tuple[str, str, bool]] = []  # (display name, text, packaged)
    for f in rule_files([PACKAGED_RULES] if paths is None else paths, problems):
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(_display(f), 0, 0, "", f"cannot read file: {exc}"))
            continue
        sources.append((_display(f), text, _is_packaged(f)))
    for name, text in (texts or {}).items():
        sources.append((name, text, False))
    builder = _Builder(named_lists, problems)
    for name, text, packaged in sources:
        builder.add_file(name, text, packaged)
    ruleset = builder.finish()
    if problems:
        raise RuleLoadError(problems)
    return ruleset


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _is_packaged(path: Path) -> bool:
    try:
        path.resolve().relative_to(PACKAGED_RULES)
    except ValueError:
        return False
    return True


def _license(doc_license: str | None, file: str, packaged: bool) -> str | None:
    if doc_license:
        return doc_license
    if "sigmahq" in file.lower():
        return "DRL-1.1"
    return "Apache-2.0" if packaged else None


class _Builder:
    """Collects rules, filters and correlations from many documents, then cross-checks them."""

    def __init__(self, lists: dict[str, tuple[Any, ...]], problems: list[Problem]) -> None:
        self.lists = lists
        self.problems = problems
        self.lints: list[Lint] = []
        self.rules: list[tuple[Rule, Document, bool]] = []
        self.filters: list[tuple[Filter, Document]] = []
        self.correlations: list[tuple[Correlation, Document]] = []
        self.known = known_field_paths()

    # -- helpers -------------------------------------------------------------------------------

    def err(
        self,
        doc: Document,
        path: DocPath,
        msg: str,
        hint: str | None = None,
        *,
        value: bool = False,
    ) -> None:
        self.problems.append(doc.problem(path, msg, hint, value=value))

    def lint(
        self, doc: Document, path: DocPath, msg: str, code: str, hint: str | None = None
    ) -> None:
        line, col = doc.mark(path)
        self.lints.append(Lint(doc.file, line, col, dotted(path), msg, hint, code))

    def text(
        self, doc: Document, m: Mapping[str, Any], key: str, *, required: bool = False
    ) -> str | None:
        value = m.get(key)
        if value is None:
            if required:
                self.err(doc, (), f"missing required key '{key}'")
            return None
        if isinstance(value, (dict, list)):
            self.err(doc, (key,), f"'{key}' must be a string", value=True)
            return None
        return str(value)

    def text_list(self, doc: Document, m: Mapping[str, Any], key: str) -> tuple[str, ...]:
        value = m.get(key)
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list) or any(isinstance(v, (dict, list)) for v in value):
            self.err(doc, (key,), f"'{key}' must be a list of strings", value=True)
            return ()
        return tuple(str(v) for v in value)

    def check_keys(
        self, doc: Document, m: Mapping[str, Any], allowed: Sequence[str], prefix: DocPath
    ) -> None:
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

    # -- documents -----------------------------------------------------------------------------

    def add_file(self, file: str, text: str, packaged: bool) -> None:
        try:
            docs = load_documents(text, file)
        except YamlProblems as exc:
            self.problems.extend(exc.problems)
            return
        if not docs or all(d.value is None for d in docs):
            self.problems.append(Problem(file, 1, 1, "", "file contains no rule"))
        for doc in docs:
            if doc.value is None:
                continue  # empty document between '---' separators
            if not isinstance(doc.value, dict):
                self.err(doc, (), "a rule document must be a mapping")
                continue
            if "correlation" in doc.value:
                self.add_correlation(doc)
            elif "filter" in doc.value and "detection" not in doc.value:
                self.add_filter(doc)
            else:
                self.add_rule(doc, packaged)

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
                license=_license(self.text(doc, m, "license"), file, packaged),
                klaxon=klaxon,
                source=source_name(file, "detections/rules/", under_root=packaged),
            )
        if rule is not None and len(self.problems) == before:
            self.rules.append((rule, doc, packaged))
            self.rule_lints(rule, doc, packaged)

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
                )
            )
        return KlaxonBlock(summary=summary, mtmk=mtmk, tests=tuple(tests))

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
            elif not is_known_field(resolve_alias(name), self.known):
                self.lint(
                    doc,
                    ("klaxon", "summary"),
                    f"summary placeholder {{{name}}} is not a known field",
                    "unknown-field",
                    suggest(name, self.known),
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
        used = set().union(*(cond.refs(n) for n in nodes))
        for name in selections:
            if name not in used:
                self.lint(
                    doc,
                    (*path, name),
                    f"selection '{name}' is not used by the condition",
                    "unused-selection",
                )
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
        seconds = 0
        m_span = _TIMESPAN.match(str(span)) if span is not None else None
        if m_span is None:
            self.err(
                doc,
                ("correlation", "timespan"),
                f"timespan {span!r} must look like 5m, 1h or 30s",
                value=True,
            )
        else:
            seconds = int(m_span.group(1)) * _TIMESPAN_SECONDS[m_span.group(2)]
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
                    timespan_seconds=seconds,
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

    def finish(self) -> RuleSet:
        seen: dict[str, tuple[Document, str]] = {}
        items: list[tuple[str | None, Document, str]] = [
            (r.id, d, r.title) for r, d, _ in self.rules
        ]
        items += [(f.id, d, f.title) for f, d in self.filters]
        items += [(c.id, d, c.title) for c, d in self.correlations]
        for ident, doc, title in items:
            if ident is None:
                continue
            if ident in seen:
                first_doc, first_title = seen[ident]
                fl, _ = first_doc.mark(("id",))
                sl, _ = doc.mark(("id",))
                self.err(
                    doc,
                    ("id",),
                    f"duplicate id {ident} (also used by '{first_title}' at {first_doc.file}:{fl})",
                )
                self.err(
                    first_doc,
                    ("id",),
                    f"duplicate id {ident} (also used by '{title}' at {doc.file}:{sl})",
                )
            else:
                seen[ident] = (doc, title)
        names = {r.id for r, _, _ in self.rules} | {r.name for r, _, _ in self.rules if r.name}
        corr_names = {c.id for c, _ in self.correlations if c.id} | {
            c.name for c, _ in self.correlations if c.name
        }
        for flt, doc in self.filters:
            for i, target in enumerate(flt.rules):
                if target not in names:
                    self.err(
                        doc,
                        ("filter", "rules", i)
                        if isinstance(doc.value["filter"].get("rules"), list)
                        else ("filter", "rules"),
                        f"filter names unknown rule '{target}'",
                        suggest(target, names),
                    )
        for corr, doc in self.correlations:
            self.tag_lints(corr.tags, corr.klaxon.mtmk if corr.klaxon else (), doc)
            for i, target in enumerate(corr.rules):
                if target not in names and target not in corr_names:
                    self.err(
                        doc,
                        ("correlation", "rules", i),
                        f"correlation names unknown rule '{target}'",
                        suggest(target, names | corr_names),
                    )
        for flt, doc in self.filters:
            self.filter_lints(flt, doc)
        return RuleSet(
            rules=tuple(r for r, _, _ in self.rules),
            filters=tuple(f for f, _ in self.filters),
            correlations=tuple(c for c, _ in self.correlations),
            lints=tuple(sorted(self.lints, key=lambda x: (x.file, x.line, x.col, x.message))),
            lists=dict(self.lists),
        )

    # -- lints ---------------------------------------------------------------------------------

    def field_lints(
        self, doc: Document, selections: Mapping[str, Selection], base: DocPath
    ) -> None:
        for sel in selections.values():
            for ai, alt in enumerate(sel.alternatives):
                for fm in alt:
                    path: DocPath = (*base, sel.name)
                    if len(sel.alternatives) > 1:
                        path = (*path, ai)
                    path = (*path, fm.key)
                    if fm.field in ALIASES:
                        self.lint(
                            doc,
                            path,
                            f"'{fm.field}' is an alias; it is read from {fm.path}",
                            "alias",
                            fm.path,
                        )
                    elif not is_known_field(fm.path, self.known):
                        self.lint(
                            doc,
                            path,
                            f"field '{fm.field}' is not in the audit event schema",
                            "unknown-field",
                            suggest(fm.field, self.known),
                        )
                    if fm.path in NUMERIC_FIELDS and not fm.modifiers:
                        for v in fm.values:
                            if isinstance(v, str) and not _numeric_text(v):
                                self.lint(
                                    doc,
                                    path,
                                    f"{fm.path} is a number; {v!r} can never match "
                                    "(the authorization decision is the derived field 'decision')",
                                    "never-matches",
                                    f"decision: {v.lower()}",
                                )

    def rule_lints(self, rule: Rule, doc: Document, packaged: bool) -> None:
        self.field_lints(doc, rule.detection, ("detection",))
        if not rule.techniques:
            self.lint(doc, ("tags",), "no ATT&CK technique tag (attack.tNNNN)", "no-attack")
        self.tag_lints(rule.tags, rule.klaxon.mtmk, doc)
        if rule.level is None:
            self.lint(doc, (), "no 'level'; alerts will use 'medium'", "no-level")
        if rule.logsource and (
            rule.logsource.get("product") != "kubernetes"
            or rule.logsource.get("service") != "audit"
        ):
            self.lint(
                doc,
                ("logsource",),
                "logsource is not {product: kubernetes, service: audit}",
                "logsource",
            )
        if packaged:
            expects = {t.expect for t in rule.klaxon.tests}
            if expects != {"hit", "miss"}:
                self.lint(
                    doc,
                    ("klaxon",),
                    "rule needs at least one 'hit' and one 'miss' test",
                    "no-tests",
                )
        self.never_matching_filters(rule.condition, rule.detection, doc, ("detection",))
        self.redundant_quantifiers(rule.condition, doc)

    def redundant_quantifiers(self, node: cond.Node, doc: Document) -> None:
        """Lint ``sel_a and 1 of sel_*``: the quantifier is satisfied by ``sel_a`` itself."""
        if not isinstance(node, cond.And):
            return
        required = {i.name for i in node.items if isinstance(i, cond.Ref)}
        for item in node.items:
            if isinstance(item, (cond.Or, cond.AtLeast)) and all(
                isinstance(r, cond.Ref) for r in item.items
            ):
                names = [r.name for r in item.items if isinstance(r, cond.Ref)]
                overlap = [n for n in names if n in required]
                if overlap and len(names) > 1:
                    self.lint(
                        doc,
                        ("detection", "condition"),
                        f"'{overlap[0]}' is required on its own and also counts towards a "
                        f"quantifier over {', '.join(names)}, which it therefore always satisfies",
                        "redundant-quantifier",
                    )

    def tag_lints(self, tags: Sequence[str], mtmk: Sequence[str], doc: Document) -> None:
        """ATT&CK tags and Threat Matrix ids (of a rule or a correlation) checked against the
        bundled mitre catalogue."""
        attack = _mitre()
        if attack is None:
            return
        for message in attack.validate_tags(tags):
            tag = message.split(":", 1)[0]
            index = next((i for i, t in enumerate(tags) if t == tag), None)
            path: DocPath = ("tags", index) if index is not None else ("tags",)
            self.lint(
                doc,
                path,
                message.split(": ", 1)[-1] if index is not None else message,
                "attack-tag",
            )
        for message in attack.validate_mtmk(mtmk):
            self.lint(doc, ("klaxon", "mtmk"), message, "mtmk")

    def never_matching_filters(
        self, node: cond.Node, selections: Mapping[str, Selection], doc: Document, base: DocPath
    ) -> None:
        """Lint ``a and not f`` where ``f`` can never hold whenever ``a`` holds."""
        if not isinstance(node, cond.And):
            return
        positives = [i for i in node.items if not isinstance(i, cond.Not)]
        required = constraints(cond.And(tuple(positives)), selections) if positives else [{}]
        for item in node.items:
            if isinstance(item, cond.Not):
                for name in sorted(cond.refs(item.item)):
                    field = disjoint(required, constraints(cond.Ref(name), selections))
                    if field is not None:
                        self.lint(
                            doc,
                            (*base, name),
                            f"'{name}' can never match when the rest of the condition does "
                            f"(they require different {field} values), so excluding it "
                            "does nothing",
                            "dead-filter",
                        )

    def filter_lints(self, flt: Filter, doc: Document) -> None:
        self.field_lints(doc, flt.detection, ("filter",))
        positive = constraints(flt.condition, flt.detection)
        negated = None
        if isinstance(flt.condition, cond.Not):
            negated = constraints(flt.condition.item, flt.detection)
        for rule, _, _ in self.rules:
            if {rule.id, rule.name} & set(flt.rules):
                req = constraints(rule.condition, rule.detection)
                if negated is not None:
                    field = disjoint(req, negated)
                    message = f"filter can never apply to '{rule.title}'"
                else:
                    field = disjoint(req, positive)
                    message = f"filter makes '{rule.title}' unable to ever fire"
                if field is not None:
                    self.lint(
                        doc,
                        ("filter",),
                        f"{message} (they require different {field} values)",
                        "dead-filter",
                    )


def _numeric_text(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _quote_offset(doc: Document, path: DocPath) -> int:
    """1 when the scalar at ``path`` is written in quotes (its text starts one column later)."""
    return 1 if tuple(path) in doc.quoted else 0


def _mitre() -> Any:
    """The ``mitre.attack`` module when the mitre package is importable, else None."""
    try:
        from mitre import attack
    except ImportError:  # pragma: no cover - mitre ships with klaxon
        return None
    return attack
