"""Detection coverage of the ATT&CK Containers matrix: a model and three renderings.

Pure functions: rule records `(rule_id, title, level, tags)` in, a `Coverage` model out, then
a terminal matrix (`render_terminal`), an ATT&CK Navigator layer (`navigator_layer`, layer
format 4.5) and a self-contained HTML heatmap (`render_html`). No I/O here; the `klaxon mitre
coverage` command reads the rules and writes the files.

A rule counts for a technique under the tactics its tags name (`attack.privilege-escalation`
with `attack.t1611`); when it names none of that technique's tactics, under all of them.

>>> cov = build_coverage([
...     ("r1", "Privileged pod", "high", ["attack.privilege-escalation", "attack.t1611"]),
...     ("r2", "Exec into pod", "medium", ["attack.execution", "attack.t1609"]),
...     ("r3", "hostPath mount", "high", ["attack.t1611"]),
... ])
>>> cov.cell("T1611", "privilege-escalation").count
2
>>> cov.summary()
'2 of 48 ATT&CK v18.1 Containers techniques covered (4%) by 3 rules'
"""

from __future__ import annotations

import html
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from mitre.attack import Catalogue, Tactic, Technique, catalogue
from mitre.errors import TagError, UnknownIdError

__all__ = [
    "Cell",
    "Column",
    "Coverage",
    "RuleRecord",
    "build_coverage",
    "navigator_layer",
    "render_html",
    "render_terminal",
]

NAVIGATOR_VERSION = "5.1.0"  # any Navigator >= 4.9.0 reads layer format 4.5
LAYER_FORMAT = "4.5"


@dataclass(frozen=True, slots=True)
class RuleRecord:
    """What coverage needs to know about a rule."""

    rule_id: str
    title: str
    level: str
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Cell:
    """One technique under one tactic, with the rules that detect it there."""

    technique: Technique
    tactic: Tactic
    rules: tuple[RuleRecord, ...] = ()

    @property
    def count(self) -> int:
        """Number of distinct rules covering this cell."""
        return len(self.rules)


@dataclass(frozen=True, slots=True)
class Column:
    """A tactic and its techniques: parents in id order, each followed by its sub-techniques."""

    tactic: Tactic
    cells: tuple[Cell, ...]

    @property
    def covered(self) -> int:
        """Number of cells with at least one rule."""
        return sum(1 for c in self.cells if c.count)


@dataclass(frozen=True, slots=True)
class Coverage:
    """Coverage of the Containers matrix by a set of rules."""

    attack_version: str
    columns: tuple[Column, ...]
    rules: tuple[RuleRecord, ...]
    total: int  # techniques (and sub-techniques) on the Containers platform
    covered: frozenset[str]  # Containers technique ids with at least one rule
    covered_outside: frozenset[str]  # covered ids outside the Containers platform
    untagged: tuple[RuleRecord, ...] = ()  # rules naming no known technique
    problems: tuple[tuple[str, str], ...] = field(default=())  # (rule_id, tag problem)

    def cell(self, technique_id: str, tactic: str) -> Cell:
        """The cell for a technique id under a tactic shortname; KeyError if not shown."""
        for col in self.columns:
            if col.tactic.shortname == tactic:
                for c in col.cells:
                    if c.technique.id == technique_id:
                        return c
        raise KeyError((technique_id, tactic))

    def summary(self) -> str:
        """One line: distinct Containers techniques covered of all, and by how many rules."""
        n, m = len(self.covered), self.total
        pct = round(100 * n / m) if m else 0
        line = (
            f"{n} of {m} ATT&CK v{self.attack_version} Containers techniques covered ({pct}%) "
            f"by {len(self.rules)} rule{'s' if len(self.rules) != 1 else ''}"
        )
        if self.covered_outside:
            line += f"; {len(self.covered_outside)} more outside Containers"
        if self.untagged:
            line += f"; {len(self.untagged)} without an ATT&CK technique"
        return line


RecordLike = RuleRecord | tuple[str, str, str, Iterable[str]]


def _record(r: RecordLike) -> RuleRecord:
    if isinstance(r, RuleRecord):
        return r
    rule_id, title, level, tags = r
    return RuleRecord(str(rule_id), str(title), str(level), tuple(str(t) for t in tags))


def build_coverage(records: Iterable[RecordLike], cat: Catalogue | None = None) -> Coverage:
    """The coverage model for these rules (records or `(id, title, level, tags)` tuples)."""
    cat = cat or catalogue()
    rules = tuple(_record(r) for r in records)
    hits: dict[tuple[str, str], dict[str, RuleRecord]] = {}
    problems: list[tuple[str, str]] = []
    untagged: list[RuleRecord] = []
    for rule in rules:
        problems += [(rule.rule_id, p) for p in cat.validate_tags(rule.tags)]
        listed: set[str] = set()
        techs: list[Technique] = []
        for tag in rule.tags:
            try:
                item = cat.parse_tag(tag)
            except (TagError, UnknownIdError):
                continue
            if isinstance(item, Technique):
                techs.append(item)
            else:
                listed.add(item.shortname)
        if not techs:
            untagged.append(rule)
        for tech in techs:
            placed = [s for s in tech.tactics if s in listed] or list(tech.tactics)
            for shortname in placed:
                hits.setdefault((tech.id, shortname), {})[rule.rule_id] = rule

    columns: list[Column] = []
    for tac in cat.tactics:
        shown = [
            t
            for t in cat.techniques
            if tac.shortname in t.tactics and (t.containers or (t.id, tac.shortname) in hits)
        ]
        if not tac.containers and not shown:
            continue
        cells = [
            Cell(t, tac, tuple(hits.get((t.id, tac.shortname), {}).values()))
            for t in _parent_order(shown)
        ]
        columns.append(Column(tac, tuple(cells)))

    covered_ids = {tid for tid, _ in hits}
    containers_ids = {t.id for t in cat.techniques if t.containers}
    return Coverage(
        attack_version=cat.version,
        columns=tuple(columns),
        rules=rules,
        total=len(containers_ids),
        covered=frozenset(covered_ids & containers_ids),
        covered_outside=frozenset(covered_ids - containers_ids),
        untagged=tuple(untagged),
        problems=tuple(problems),
    )


def _parent_order(techs: Sequence[Technique]) -> list[Technique]:
    """Parents by id, each followed by its sub-techniques; orphans sort by their parent's id."""
    return sorted(techs, key=lambda t: (t.parent or t.id, t.parent is not None, t.id))


# --- terminal ---------------------------------------------------------------------------

_ANSI_RESET = "\x1b[0m"
_ANSI_DIM = "\x1b[2m"
_ANSI_BOLD = "\x1b[1m"
# 256-colour greens by rule count: 1, 2, 3, 4+.
_ANSI_HEAT = ("\x1b[38;5;150m", "\x1b[38;5;114m", "\x1b[38;5;71m", "\x1b[1;38;5;34m")


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _cell_text(c: Cell, width: int, parent_shown: bool) -> str:
    t = c.technique
    label = f"  {t.id[t.id.index('.') :]}" if t.is_subtechnique and parent_shown else t.id
    label += "" if t.containers else "*"
    return _fit(f"{c.count:>3} {label:<10} {t.name}", width)


def render_terminal(cov: Coverage, *, width: int = 120, color: bool = False) -> str:
    """The matrix as text: tactic columns in bands that fit `width`, rule count per technique.

    Uncovered techniques show 0 (dimmed with colour); `*` marks techniques outside the
    Containers platform; sub-techniques are indented under their parent.

    >>> cov = build_coverage([("r1", "Exec", "medium", ["attack.execution", "attack.t1609"])])
    >>> text = render_terminal(cov, width=100)
    >>> max(len(line) for line in text.splitlines()) <= 100
    True
    >>> "  1 T1609      Container Admin…" in text  # names are cut to fit the column
    True
    """
    gap = 3
    per_band = 3 if width >= 96 else 2 if width >= 62 else 1
    colw = (width - gap * (per_band - 1)) // per_band
    ids = {c.tactic.shortname: {cell.technique.id for cell in c.cells} for c in cov.columns}
    out: list[str] = []
    for start in range(0, len(cov.columns), per_band):
        band = cov.columns[start : start + per_band]
        heads = [_fit(f"{c.tactic.name.upper()}  {c.covered}/{len(c.cells)}", colw) for c in band]
        out.append(_join([(h, _ANSI_BOLD if color else "") for h in heads], colw, gap, color))
        out.append(_join([("─" * colw, "") for _ in band], colw, gap, color))
        for row in range(max(len(c.cells) for c in band)):
            parts: list[tuple[str, str]] = []
            for col in band:
                if row >= len(col.cells):
                    parts.append(("", ""))
                    continue
                cell = col.cells[row]
                style = _ANSI_HEAT[min(cell.count, 4) - 1] if cell.count else _ANSI_DIM
                shown = cell.technique.parent in ids[col.tactic.shortname]
                parts.append((_cell_text(cell, colw, shown), style if color else ""))
            out.append(_join(parts, colw, gap, color))
        out.append("")
    legend = "counts are rules per technique and tactic; * = outside the Containers platform"
    out += textwrap.wrap(legend, width) + textwrap.wrap(cov.summary(), width)
    return "\n".join(out) + "\n"


def _join(parts: list[tuple[str, str]], colw: int, gap: int, color: bool) -> str:
    chunks = []
    for text, style in parts:
        padded = text.ljust(colw)
        chunks.append(f"{style}{padded}{_ANSI_RESET}" if color and style else padded)
    return (" " * gap).join(chunks).rstrip()


# --- ATT&CK Navigator layer ---------------------------------------------------------------

_GRADIENT = ("#c7e9c0", "#74c476", "#238b45")


def navigator_layer(
    cov: Coverage,
    *,
    name: str = "Klaxon detection coverage",
    description: str | None = None,
) -> dict[str, object]:
    """An ATT&CK Navigator layer (format 4.5): one scored entry per covered technique and tactic.

    Score is the rule count, the comment lists the rule titles, and the gradient runs from one
    rule to the busiest cell.

    >>> cov = build_coverage([("r1", "Exec", "medium", ["attack.execution", "attack.t1609"])])
    >>> layer = navigator_layer(cov)
    >>> layer["versions"]
    {'attack': '18', 'navigator': '5.1.0', 'layer': '4.5'}
    >>> layer["domain"], layer["filters"]
    ('enterprise-attack', {'platforms': ['Containers']})
    >>> layer["techniques"][0]["techniqueID"], layer["techniques"][0]["score"]
    ('T1609', 1)
    """
    entries: list[dict[str, object]] = []
    for col in cov.columns:
        for cell in col.cells:
            if not cell.count:
                continue
            titles = sorted({r.title for r in cell.rules})
            entries.append(
                {
                    "techniqueID": cell.technique.id,
                    "tactic": col.tactic.shortname,
                    "score": cell.count,
                    "comment": f"{cell.count} rule{'s' if cell.count != 1 else ''}: "
                    + "; ".join(titles),
                    "enabled": True,
                    "metadata": [
                        {"name": "rule", "value": f"{r.title} [{r.level}] {r.rule_id}"}
                        for r in sorted(cell.rules, key=lambda r: r.title)
                    ],
                    "showSubtechniques": False,
                }
            )
    top = max((int(str(e["score"])) for e in entries), default=1)
    max_value = max(top, 2)  # the Navigator needs maxValue > minValue
    desc = description or (
        f"Klaxon rules mapped to ATT&CK v{cov.attack_version} (Containers). {cov.summary()}."
        " Score = number of rules."
    )
    if cov.covered_outside:
        desc += (
            " Covered techniques outside the Containers platform (hidden by the platform"
            f" filter): {', '.join(sorted(cov.covered_outside))}."
        )
    major = cov.attack_version.split(".")[0]
    return {
        "name": name,
        "versions": {"attack": major, "navigator": NAVIGATOR_VERSION, "layer": LAYER_FORMAT},
        "domain": "enterprise-attack",
        "description": desc,
        "filters": {"platforms": ["Containers"]},
        "sorting": 3,
        "layout": {
            "layout": "side",
            "showID": True,
            "showName": True,
            "showAggregateScores": False,
            "countUnscored": False,
            "aggregateFunction": "average",
            "expandedSubtechniques": "annotated",
        },
        "hideDisabled": False,
        "techniques": entries,
        "gradient": {"colors": list(_GRADIENT), "minValue": 1, "maxValue": max_value},
        "legendItems": [
            {"label": "1 rule", "color": _GRADIENT[0]},
            {"label": f"{max_value}+ rules", "color": _GRADIENT[-1]},
        ],
        "metadata": [
            {"name": "generated by", "value": "klaxon mitre coverage"},
            {"name": "ATT&CK version", "value": cov.attack_version},
            {"name": "rules", "value": str(len(cov.rules))},
        ],
        "links": [],
        "showTacticRowBackground": True,
        "tacticRowBackground": "#dddddd",
        "selectTechniquesAcrossTactics": True,
        "selectSubtechniquesWithParent": False,
        "selectVisibleTechniques": False,
    }


# --- HTML heatmap ----------------------------------------------------------------------------

# Background and text colour by rule count: 0, 1, 2, 3, 4+.
_HTML_HEAT = (
    ("#f1f3f5", "#868e96"),
    ("#c7e9c0", "#1b3d1b"),
    ("#74c476", "#0b2a0b"),
    ("#31a354", "#ffffff"),
    ("#006d2c", "#ffffff"),
)

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 24px; font: 13px/1.35 system-ui, -apple-system, "Segoe UI", sans-serif;
       color: #212529; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; }
p.summary { margin: 0 0 12px; color: #495057; }
.legend { display: flex; gap: 12px; align-items: center; margin: 0 0 16px; color: #495057; }
.legend span { display: inline-flex; align-items: center; gap: 4px; }
.legend i { width: 14px; height: 14px; border-radius: 3px; border: 1px solid #dee2e6; }
.matrix { display: grid; grid-template-columns: repeat(var(--cols), minmax(130px, 1fr));
          gap: 6px; align-items: start; }
.tactic h2 { font-size: 12px; margin: 0; padding: 6px; background: #343a40; color: #fff;
             border-radius: 4px 4px 0 0; }
.tactic h2 small { display: block; font-weight: normal; color: #ced4da; }
.cell { padding: 4px 6px; margin-top: 2px; border-radius: 3px; cursor: default;
        display: flex; justify-content: space-between; gap: 4px; }
.cell.sub { margin-left: 10px; font-size: 12px; }
.cell.outside { outline: 1px dashed #495057; outline-offset: -1px; }
.cell b { font-variant-numeric: tabular-nums; }
.cell .id { display: block; font-size: 10px; opacity: .8; }
footer { margin-top: 20px; color: #868e96; font-size: 11px; }
"""


def _heat(count: int) -> tuple[str, str]:
    return _HTML_HEAT[min(count, len(_HTML_HEAT) - 1)]


def render_html(cov: Coverage, *, title: str = "Klaxon ATT&CK coverage") -> str:
    """A self-contained HTML page (inline CSS, no scripts, no external resources).

    Technique cells are coloured by rule count; hovering one shows its rules (`title`).

    >>> cov = build_coverage([("r1", "Exec <b>", "medium", ["attack.execution", "attack.t1609"])])
    >>> page = render_html(cov)
    >>> page.startswith("<!doctype html>"), "Exec &lt;b&gt; [medium]" in page, "http://" in page
    (True, True, False)
    """
    esc = html.escape
    cols: list[str] = []
    for col in cov.columns:
        cells: list[str] = []
        shown = {c.technique.id for c in col.cells}
        for cell in col.cells:
            t = cell.technique
            bg, fg = _heat(cell.count)
            hover = [f"{t.id} {t.name} ({cell.count} rule{'s' if cell.count != 1 else ''})"]
            hover += [f"• {r.title} [{r.level}]" for r in sorted(cell.rules, key=lambda r: r.title)]
            if not t.containers:
                hover.append("(outside the ATT&CK Containers platform)")
            classes = "cell" + (" sub" if t.parent in shown else "")
            classes += "" if t.containers else " outside"
            cells.append(
                f'<div class="{classes}" style="background:{bg};color:{fg}" '
                f'title="{esc(chr(10).join(hover))}" data-technique="{esc(t.id)}" '
                f'data-count="{cell.count}"><span>{esc(t.name)}'
                f'<span class="id">{esc(t.id)}</span></span><b>{cell.count}</b></div>'
            )
        cols.append(
            f'<section class="tactic" data-tactic="{esc(col.tactic.shortname)}">'
            f"<h2>{esc(col.tactic.name)}<small>{esc(col.tactic.id)} · "
            f"{col.covered}/{len(col.cells)} covered</small></h2>{''.join(cells)}</section>"
        )
    legend = "".join(
        f'<span><i style="background:{bg}"></i>{label}</span>'
        for (bg, _), label in zip(_HTML_HEAT, ("0", "1", "2", "3", "4+ rules"), strict=True)
    )
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">\n'
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style></head>\n<body>\n"
        f"<h1>{esc(title)}</h1>\n"
        f'<p class="summary">{esc(cov.summary())}</p>\n'
        f'<div class="legend">Rules per technique: {legend}'
        '<span><i style="outline:1px dashed #495057"></i>outside Containers</span></div>\n'
        f'<main class="matrix" style="--cols:{len(cov.columns)}">{"".join(cols)}</main>\n'
        f"<footer>MITRE ATT&amp;CK® v{esc(cov.attack_version)} (Containers). © 2025 The MITRE "
        "Corporation. This work is reproduced and distributed with the permission of The MITRE "
        "Corporation.</footer>\n</body></html>\n"
    )
