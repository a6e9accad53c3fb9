"""What ``klaxon rules convert`` prints: queries (text or JSON lines) and a summary per target."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

import orjson

from detections.convert.converter import Outcome, Report


def write_queries(report: Report, out: TextIO) -> None:
    """Each outcome as a comment line (title, id, file) and its query, or why there is none."""
    for o in report.outcomes:
        head = f"{o.kind} '{o.title}' ({o.id}, {o.file})"
        if o.query is not None:
            out.write(f"# {report.target}: {head}\n{o.query}\n\n")
        else:
            out.write(f"# {report.target}: cannot convert {head}: {o.reason}\n\n")


def write_json(report: Report, out: TextIO) -> None:
    """One JSON object per outcome: target, kind, id, title, file, query, reason."""
    for o in report.outcomes:
        out.write(orjson.dumps({"target": report.target, **_fields(o)}).decode() + "\n")


def _fields(o: Outcome) -> dict[str, str | None]:
    return {
        "kind": o.kind,
        "id": o.id,
        "title": o.title,
        "file": o.file,
        "query": o.query,
        "reason": o.reason,
    }


def write_summary(reports: Sequence[Report], out: TextIO, *, titles: int = 3) -> None:
    """Converted and not converted per target, then the reasons grouped, with some titles."""
    for report in reports:
        rules = [o for o in report.outcomes if o.kind == "rule"]
        corrs = [o for o in report.outcomes if o.kind == "correlation"]
        out.write(
            f"{report.target}: {sum(o.converted for o in rules)}/{len(rules)} rules, "
            f"{sum(o.converted for o in corrs)}/{len(corrs)} correlations converted\n"
        )
        for kind, outcomes in report.reasons().items():
            out.write(f"  {len(outcomes):3d} × {kind}\n")
            details: dict[str, list[str]] = {}
            for o in outcomes:
                detail = (o.reason or "").partition(": ")[2]
                details.setdefault(detail, []).append(o.title)
            for detail, names in sorted(details.items(), key=lambda kv: -len(kv[1])):
                shown = ", ".join(f"'{n}'" for n in names[:titles])
                more = f" and {len(names) - titles} more" if len(names) > titles else ""
                if detail:
                    out.write(f"        {detail}\n    ")
                out.write(f"        {shown}{more}\n")
