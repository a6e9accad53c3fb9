"""Named value lists for ``|expand`` placeholders (``'%system_principals%'``).

The packaged files ``detections/lists/*.yml`` define lists::

    system_principals:
      description: Why these identities are trusted.
      values: ['system:kube-controller-manager', 'system:node:*']

A user's own file (``--lists FILE`` or ``KLAXON_LISTS``) may define new lists the same way, or
change packaged ones with ``append: [...]`` or ``replace: [...]`` instead of ``values:``.

>>> base = parse_lists("a:\\n  description: d\\n  values: [x]\\n", "base.yml", {})
>>> parse_lists("a:\\n  append: [y]\\n", "mine.yml", base)
{'a': ('x', 'y')}
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from detections.errors import Problem, RuleLoadError, suggest
from detections.rule import Rule
from detections.yamlsrc import Document, YamlProblems, load_documents

PACKAGED_LISTS = Path(__file__).resolve().parent / "lists"
_ENTRY_KEYS = ("description", "values", "append", "replace")


def parse_lists(
    text: str,
    file: str,
    base: Mapping[str, tuple[Any, ...]],
    problems: list[Problem] | None = None,
) -> dict[str, tuple[Any, ...]]:
    """Apply one list file on top of ``base``; problems are appended (or raised if not given)."""
    sink: list[Problem] = [] if problems is None else problems
    out = dict(base)
    try:
        docs = load_documents(text, file)
    except YamlProblems as exc:
        sink.extend(exc.problems)
        docs = []
    for doc in docs:
        if doc.value is None:
            continue
        if not isinstance(doc.value, dict):
            sink.append(doc.problem((), "a list file must be a mapping of list names"))
            continue
        for name, entry in doc.value.items():
            sink.extend(_apply_entry(doc, name, entry, base, out))
    if problems is None and sink:
        raise RuleLoadError(sink)
    return out


def _apply_entry(
    doc: Document,
    name: Any,
    entry: Any,
    base: Mapping[str, tuple[Any, ...]],
    out: dict[str, tuple[Any, ...]],
) -> list[Problem]:
    """Apply one entry of a list file (``name: {values|append|replace: [...]}``) to ``out``;
    returns its problems (``out`` is left alone when the entry cannot be applied)."""
    path = (str(name),)
    if not isinstance(entry, dict):
        return [doc.problem(path, "expected a mapping with 'values' (or append/replace)")]
    found = [
        doc.problem((*path, str(key)), f"unknown key '{key}'", suggest(str(key), _ENTRY_KEYS))
        for key in entry
        if key not in _ENTRY_KEYS
    ]
    ops = [k for k in ("values", "append", "replace") if k in entry]
    if len(ops) != 1:
        return [*found, doc.problem(path, "give exactly one of 'values', 'append', 'replace'")]
    op = ops[0]
    items = entry[op]
    if not isinstance(items, list) or any(isinstance(i, (dict, list)) or i is None for i in items):
        problem = doc.problem((*path, op), "expected a list of strings or numbers", value=True)
        return [*found, problem]
    if op != "values" and name not in out:
        verb = "append to" if op == "append" else "replace"
        problem = doc.problem(path, f"cannot {verb} unknown list '{name}'", suggest(str(name), out))
        return [*found, problem]
    if op == "values" and name in base:
        problem = doc.problem(path, f"list '{name}' is already defined; use append: or replace:")
        return [*found, problem]
    out[str(name)] = (*out[str(name)], *items) if op == "append" else tuple(items)
    return found


def load_lists(
    user_files: Iterable[str | os.PathLike[str]] = (),
    problems: list[Problem] | None = None,
    *,
    packaged: bool = True,
) -> dict[str, tuple[Any, ...]]:
    """Packaged lists, then each user file in order.

    Raises RuleLoadError when ``problems`` is None; otherwise appends to it.
    """
    sink: list[Problem] = [] if problems is None else problems
    lists: dict[str, tuple[Any, ...]] = {}
    files = sorted(PACKAGED_LISTS.glob("*.yml")) if packaged and PACKAGED_LISTS.is_dir() else []
    for path in files:
        lists = parse_lists(path.read_text(encoding="utf-8"), _display(path), lists, sink)
    base_names = set(lists)
    for user in user_files:
        p = Path(user)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            sink.append(Problem(str(p), 0, 0, "", f"cannot read list file: {exc.strerror}"))
            continue
        merged = parse_lists(text, str(p), lists, sink)
        lists = merged
    del base_names
    if problems is None and sink:
        raise RuleLoadError(sink)
    return lists


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


_PLACEHOLDER = re.compile(r"%([^%]+)%")


def empty_allow_lists(
    rules: Iterable[Rule], lists: Mapping[str, tuple[Any, ...]]
) -> dict[str, list[str]]:
    """Empty lists used with ``|outside|expand`` where every list of the comparison is empty
    (an allow-list not filled in, so the comparison matches nothing), each with the titles of
    the rules that use it.

    >>> from detections.loader import load_rules
    >>> rs = load_rules()
    >>> found = empty_allow_lists(rs.rules, rs.lists)
    >>> sorted(found)  # doctest: +NORMALIZE_WHITESPACE
    ['allowed_image_registries', 'allowed_k8s_users', 'allowed_namespaces',
     'cluster_networks', 'token_client_networks']
    >>> len(found["cluster_networks"]) > 50
    True
    """
    found: dict[str, list[str]] = {}
    for rule in rules:
        for selection in rule.detection.values():
            for alternative in selection.alternatives:
                for fm in alternative:
                    if "outside" not in fm.modifiers or "expand" not in fm.modifiers:
                        continue
                    names = [n for v in fm.values for n in _PLACEHOLDER.findall(str(v))]
                    if not names or any(lists.get(n) for n in names):
                        continue  # some list is filled in: the comparison can match
                    for name in names:
                        titles = found.setdefault(name, [])
                        if rule.title not in titles:
                            titles.append(rule.title)
    return found
