"""``klaxon dashboard``: check the Grafana dashboard's queries against a live /metrics, and
render them as a page a person can look at, without Grafana or Prometheus.

Every PromQL query of ``deploy/grafana/klaxon.json`` names metrics; each must be one a worker
or an intake exposes (``--metrics URL`` of each, or saved expositions), else exit 1 naming the
panel. ``--html OUT`` writes one box per panel: its title, its queries and the current value
of every series the queries read (one scrape cannot give a rate: that is Prometheus's job).

>>> sorted(metric_names('sum by (stage) (rate(klaxon_events_in_total{stage="detect"}[5m]))'))
['klaxon_events_in_total']
>>> sorted(metric_names("time() - max by (cluster) (klaxon_newest_event_timestamp_seconds)"))
['klaxon_newest_event_timestamp_seconds']
>>> metric_names("sum(rat(x[5m]))")
Traceback (most recent call last):
...
ValueError: unknown PromQL function 'rat'
"""

from __future__ import annotations

import argparse
import html
import json
import re
import sys
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DASHBOARD",
    "Panel",
    "metric_names",
    "panels",
    "problems",
    "read_exposition",
    "register",
    "render_html",
]

#: The dashboard shipped with Klaxon (deploy/ is beside the packages in a checkout).
DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "klaxon.json"

#: PromQL functions the dashboard may call (Prometheus 2.x/3.x names).
FUNCTIONS = frozenset(
    [
        "abs",
        "absent",
        "absent_over_time",
        "avg",
        "avg_over_time",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "count",
        "count_over_time",
        "count_values",
        "deriv",
        "delta",
        "exp",
        "floor",
        "group",
        "histogram_quantile",
        "idelta",
        "increase",
        "irate",
        "label_join",
        "label_replace",
        "last_over_time",
        "ln",
        "log2",
        "log10",
        "max",
        "max_over_time",
        "min",
        "min_over_time",
        "predict_linear",
        "quantile",
        "quantile_over_time",
        "rate",
        "resets",
        "round",
        "scalar",
        "sort",
        "sort_desc",
        "sqrt",
        "stddev",
        "stdvar",
        "sum",
        "sum_over_time",
        "time",
        "timestamp",
        "topk",
        "bottomk",
        "vector",
    ]
)
_KEYWORDS = frozenset(
    [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
    ]
)
_CLAUSE = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_WORD = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")

#: Sample names of a declared family of each type (the parser drops counters' ``_total``).
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}

#: One scrape: sample name -> [(labels, value)] (empty for a family without samples yet).
Exposition = dict[str, list[tuple[dict[str, str], float]]]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (`ValueError` for an unknown function)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", "", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", "", s)  # range selectors, $__rate_interval included
    s = _CLAUSE.sub("", s)
    names: set[str] = set()
    for m in _WORD.finditer(s):
        word = m.group()
        if m.start() and (s[m.start() - 1].isdigit() or s[m.start() - 1] == "."):
            continue  # the exponent of 1e6
        if s[m.end() :].lstrip().startswith("("):
            if word not in FUNCTIONS:
                raise ValueError(f"unknown PromQL function {word!r}")
        elif word not in _KEYWORDS:
            names.add(word)
    return names


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[str, ...]


def panels(dashboard: Mapping[str, Any]) -> list[Panel]:
    """Panels with queries, rows' nested panels included, in dashboard order."""

    def walk(items: list[Any]) -> Iterator[Panel]:
        for item in items:
            exprs = tuple(t["expr"] for t in item.get("targets", []) if t.get("expr"))
            if exprs:
                yield Panel(str(item.get("title", "")), exprs)
            yield from walk(item.get("panels", []))

    return list(walk(list(dashboard.get("panels", []))))


def read_exposition(source: str, token: str | None = None) -> Exposition:
    """Samples of a Prometheus text exposition: a ``http(s)://…/metrics`` URL or a file."""
    from prometheus_client.parser import text_string_to_metric_families

    if source.startswith(("http://", "https://")):
        request = urllib.request.Request(source)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=10) as answer:
            text = answer.read().decode()
    else:
        text = Path(source).read_text()
    out: Exposition = {}
    for family in text_string_to_metric_families(text):
        for suffix in _SUFFIXES.get(family.type, ("",)):  # declared, even with no sample yet
            out.setdefault(family.name + suffix, [])
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def problems(found: list[Panel], exposed: Mapping[str, Any]) -> list[str]:
    """What is wrong with the panels' queries given the exposed sample names (empty: none)."""
    out: list[str] = []
    for panel in found:
        for expr in panel.queries:
            try:
                names = metric_names(expr)
            except ValueError as exc:
                out.append(f"{panel.title}: {exc} in {expr}")
                continue
            if not names:
                out.append(f"{panel.title}: no metric in {expr}")
            out += [
                f"{panel.title}: {n} is not exposed ({expr})" for n in sorted(names - set(exposed))
            ]
    return out


def _bars(series: list[tuple[dict[str, str], float]]) -> str:
    top = sorted(series, key=lambda s: -abs(s[1]))[:12]
    peak = max((abs(v) for _, v in top), default=0.0) or 1.0
    rows = []
    for i, (labels, value) in enumerate(top):
        text = ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "(no labels)"
        width = 220 * abs(value) / peak
        rows.append(
            f'<rect x="0" y="{i * 18}" width="{width:.1f}" height="14" fill="#4e79a7"/>'
            f'<text x="228" y="{i * 18 + 11}">{value:.6g}  {html.escape(text[:70])}</text>'
        )
    height = 18 * len(top) + 2
    return f'<svg width="690" height="{height}" font-size="11">{"".join(rows)}</svg>'


def render_html(found: list[Panel], exposed: Exposition, title: str = "Klaxon") -> str:
    """One page: per panel its title, queries and the current series of what they read."""
    boxes = []
    for panel in found:
        parts = [f"<h2>{html.escape(panel.title)}</h2>"]
        for expr in panel.queries:
            parts.append(f"<pre>{html.escape(expr)}</pre>")
            for name in sorted(metric_names(expr)):
                series = exposed.get(name)
                if not series:
                    state = "not exposed" if series is None else "declared, no series yet"
                    parts.append(f'<p class="missing">{html.escape(name)}: {state}</p>')
                else:
                    parts.append(f"<p>{html.escape(name)}</p>{_bars(series)}")
        boxes.append(f"<section>{''.join(parts)}</section>")
    style = (
        "body{font-family:sans-serif;background:#f4f5f7}section{background:#fff;margin:8px;"
        "padding:8px 12px;display:inline-block;vertical-align:top;width:700px}"
        "pre{white-space:pre-wrap;font-size:11px;color:#555}.missing{color:#c00}h2{font-size:15px}"
    )
    return (
        f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{style}</style><h1>{html.escape(title)}: current values of each panel's series"
        f"</h1>{''.join(boxes)}\n"
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``dashboard`` to the ``klaxon`` parser."""
    p = subparsers.add_parser(
        "dashboard",
        help="check the Grafana dashboard's queries against /metrics; render them as HTML",
        description="Check that every query of the Grafana dashboard reads metrics that the"
        " given workers and intakes expose; optionally render the panels as an HTML page.",
    )
    p.add_argument(
        "--metrics",
        action="append",
        required=True,
        metavar="URL|FILE",
        help="a worker's or intake's /metrics URL, or a saved exposition (repeat)",
    )
    p.add_argument("--dashboard", type=Path, default=DASHBOARD, help="Grafana dashboard JSON")
    p.add_argument(
        "--token-file", type=Path, help="bearer token for the URLs (KLAXON_METRICS_TOKEN)"
    )
    p.add_argument("--html", type=Path, metavar="OUT", help="write the panels as an HTML page")
    p.set_defaults(func=_dashboard)


def _dashboard(args: argparse.Namespace) -> int:
    try:
        token = args.token_file.read_text().strip() if args.token_file else None
        found = panels(json.loads(args.dashboard.read_text()))
        exposed: Exposition = {}
        for source in args.metrics:
            for name, series in read_exposition(source, token).items():
                exposed.setdefault(name, []).extend(series)
    except (OSError, ValueError) as exc:
        print(f"klaxon dashboard: {exc}", file=sys.stderr)
        return 1
    wrong = problems(found, exposed)
    queries = sum(len(p.queries) for p in found)
    if args.html is not None:
        args.html.write_text(render_html(found, exposed))
        print(f"klaxon dashboard: wrote {args.html}", file=sys.stderr)
    for problem in wrong:
        print(f"klaxon dashboard: {problem}", file=sys.stderr)
    print(f"{len(found)} panels, {queries} queries, {len(wrong)} problems")
    return 1 if wrong else 0
