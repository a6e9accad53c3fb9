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

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from detections.documents import DocumentParser
from detections.errors import Lint, Problem, RuleLoadError, suggest
from detections.fields import known_field_paths
from detections.lints.base import Context, Subject, filter_subject, rule_subject
from detections.lints.registry import run_lints
from detections.lists import load_lists
from detections.rule import RuleSet
from detections.yamlsrc import Document, YamlProblems, load_documents

PACKAGED_RULES = Path(__file__).resolve().parent / "rules"


def yaml_files(folder: Path) -> list[Path]:
    """The ``*.yml``/``*.yaml`` files under ``folder`` (recursively, sorted), hidden ones and
    those in hidden folders left out: a Kubernetes ConfigMap volume holds each file twice,
    as ``name.yml`` and in the ``..<timestamp>/`` folder it links to.
    """
    return sorted(
        q
        for q in folder.rglob("*")
        if q.suffix in (".yml", ".yaml")
        and q.is_file()
        and not any(part.startswith(".") for part in q.relative_to(folder).parts)
    )


def rule_files(paths: Iterable[str | os.PathLike[str]], problems: list[Problem]) -> list[Path]:
    """Expand files and folders (`yaml_files`) into a sorted file list."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(yaml_files(p))
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


class _Builder(DocumentParser):
    """Parses the documents of many files, then cross-checks them and runs the lints."""

    def __init__(self, lists: dict[str, tuple[Any, ...]], problems: list[Problem]) -> None:
        super().__init__(lists, problems)
        self.lints: list[Lint] = []

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
        named: dict[str, Document] = {}
        for rule, doc, _ in self.rules:
            if rule.name is None:
                continue
            if rule.name in named:
                first, _ = named[rule.name].mark(("name",))
                self.err(
                    doc,
                    ("name",),
                    f"duplicate name '{rule.name}' (also used at {named[rule.name].file}:{first}):"
                    " correlations would count the wrong rule",
                )
            else:
                named[rule.name] = doc
        names = {r.id for r, _, _ in self.rules} | set(named)
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
            for i, target in enumerate(corr.rules):
                if target not in names and target not in corr_names:
                    self.err(
                        doc,
                        ("correlation", "rules", i),
                        f"correlation names unknown rule '{target}'",
                        suggest(target, names | corr_names),
                    )
        self.run_lints()
        return RuleSet(
            rules=tuple(r for r, _, _ in self.rules),
            filters=tuple(f for f, _ in self.filters),
            correlations=tuple(c for c, _ in self.correlations),
            lints=tuple(sorted(self.lints, key=lambda x: (x.file, x.line, x.col, x.message))),
            lists=dict(self.lists),
        )

    # -- lints ---------------------------------------------------------------------------------

    def run_lints(self) -> None:
        """Every lint over every loaded rule, filter and correlation."""
        context = Context(known_field_paths(), tuple(r for r, _, _ in self.rules))
        subjects = [rule_subject(r, d, packaged) for r, d, packaged in self.rules]
        subjects += [filter_subject(f, d) for f, d in self.filters]
        subjects += [
            Subject(
                "correlation",
                d,
                tags=c.tags,
                mtmk=c.klaxon.mtmk if c.klaxon else (),
                summary=c.klaxon.summary if c.klaxon else None,
            )
            for c, d in self.correlations
        ]
        for subject in subjects:
            self.lints.extend(run_lints(subject, context))
