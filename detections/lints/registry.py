"""Every lint by code, and running them over one document.

To add a lint, write a function ``(subject, context) -> findings`` next to its kin and
register it here with one line.
"""

from __future__ import annotations

from collections.abc import Mapping

from detections.errors import Lint
from detections.lints import conditions, fields, meta
from detections.lints.base import Context, LintFn, Subject
from detections.yamlsrc import dotted

#: code -> lint. One line per lint.
LINTS: Mapping[str, LintFn] = {
    "alias": fields.alias,
    "unknown-field": fields.unknown_field,
    "never-matches": fields.never_matches,
    "no-attack": meta.no_attack,
    "attack-tag": meta.attack_tag,
    "mtmk": meta.mtmk,
    "no-level": meta.no_level,
    "logsource": meta.logsource,
    "no-tests": meta.no_tests,
    "unused-selection": conditions.unused_selection,
    "redundant-quantifier": conditions.redundant_quantifier,
    "dead-filter": conditions.dead_filter,
}


def run_lints(subject: Subject, context: Context) -> list[Lint]:
    """Every lint's findings on one document, positioned at the key they concern."""
    out = []
    for code, lint in LINTS.items():
        for path, message, hint in lint(subject, context):
            line, col = subject.doc.mark(path)
            out.append(Lint(subject.doc.file, line, col, dotted(path), message, hint, code))
    return out
