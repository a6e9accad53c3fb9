"""`klaxon mitre ...`: ATT&CK coverage of the rule pack, and catalogue look-ups.

    klaxon mitre coverage [--rules PATH...] [--navigator OUT.json] [--html OUT.html]
    klaxon mitre show T1611 | MS-TA9018 | privilege-escalation

The shell around the pure `mitre` package: reads rules (through `detections.load_rules`),
prints the matrix to stdout, writes the Navigator layer / HTML heatmap when asked. Diagnostics
go to stderr. Exit codes: 0 ok, 1 failure (unloadable rules, unknown id), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from klaxon.cli import needs_subcommand
from klaxon.paths import display_path
from mitre import MitreError, Tactic, TagError, Technique, catalogue, parse_tag
from mitre.coverage import RuleRecord, build_coverage, navigator_layer, render_html, render_terminal


def default_rules_path() -> Path:
    """The rule pack shipped in `detections/rules`."""
    return Path(str(resources.files("detections").joinpath("rules")))


def load_records(paths: Sequence[Path]) -> list[RuleRecord]:
    """Rules (and tagged correlations) from `paths` as coverage records, via the rule loader.

    Falls back to reading the YAML `tags` directly while `detections.load_rules` does not exist
    yet; loader errors (`detections.errors.DetectionError`) propagate.
    """
    try:
        from detections import load_rules  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return read_rule_tags(paths)
    ruleset: Any = load_rules(list(paths))
    # Correlation documents count only when tagged; their base rules are counted anyway.
    items = [*ruleset.rules, *(c for c in getattr(ruleset, "correlations", ()) if c.tags)]
    return [
        RuleRecord(
            str(r.id or getattr(r, "name", None) or r.title),
            str(r.title),
            str(r.level or ""),
            tuple(r.tags),
        )
        for r in items
    ]


def _rule_files(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix in (".yml", ".yaml"))
        else:
            files.append(p)
    return files


def read_rule_tags(paths: Sequence[Path]) -> list[RuleRecord]:
    """Coverage records read straight from Sigma YAML (`title`, `id`, `level`, `tags`).

    Documents without `detection` or `correlation` (filters, list files) are skipped.
    """
    records: list[RuleRecord] = []
    for f in _rule_files(paths):
        for doc in yaml.safe_load_all(f.read_text(encoding="utf-8")):
            if not isinstance(doc, dict) or not ("detection" in doc or "correlation" in doc):
                continue
            tags = doc.get("tags") or []
            records.append(
                RuleRecord(
                    str(doc.get("id") or doc.get("name") or f.stem),
                    str(doc.get("title") or f.stem),
                    str(doc.get("level") or ""),
                    tuple(str(t) for t in tags) if isinstance(tags, list) else (),
                )
            )
    return records


def _use_color(choice: str) -> bool:
    if choice == "always":
        return True
    if choice == "never":
        return False
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _load(paths: Sequence[Path] | None) -> list[RuleRecord] | None:
    """Records, or None after reporting why they could not be loaded."""
    from detections.errors import DetectionError

    try:
        return load_records(list(paths or [default_rules_path()]))
    except (DetectionError, OSError, yaml.YAMLError) as exc:
        print(f"klaxon mitre: cannot load rules:\n{exc}", file=sys.stderr)
        return None


def cmd_coverage(args: argparse.Namespace) -> int:
    """Print the coverage matrix; write the Navigator layer and HTML page when asked."""
    records = _load(args.rules)
    if records is None:
        return 1
    cov = build_coverage(records)
    for rule_id, problem in cov.problems:
        print(f"warning: rule {rule_id}: {problem}", file=sys.stderr)
    width = args.width or max(60, min(shutil.get_terminal_size((120, 24)).columns, 120))
    sys.stdout.write(render_terminal(cov, width=width, color=_use_color(args.color)))
    if args.navigator:
        layer = navigator_layer(cov)
        args.navigator.write_text(json.dumps(layer, indent=2) + "\n", encoding="utf-8")
        print(f"wrote ATT&CK Navigator layer {display_path(args.navigator)}", file=sys.stderr)
    if args.html:
        args.html.write_text(render_html(cov), encoding="utf-8")
        print(f"wrote HTML heatmap {display_path(args.html)}", file=sys.stderr)
    return 0


def _show_technique(t: Technique, records: list[RuleRecord] | None) -> list[str]:
    cat = catalogue()
    lines = [f"{t.id}  {t.name}"]
    lines.append("  tactics:   " + ", ".join(f"{cat.tactic(s).name} ({s})" for s in t.tactics))
    where = "Containers" if t.containers else "Enterprise, outside the Containers platform"
    lines.append(f"  platform:  {where} (ATT&CK v{cat.version})")
    if t.parent:
        lines.append(f"  parent:    {t.parent} {cat.technique(t.parent).name}")
    subs = [s for s in cat.techniques if s.parent == t.id]
    if subs:
        lines.append("  sub-techniques: " + ", ".join(f"{s.id} {s.name}" for s in subs))
    lines.append(f"  url:       {t.url}")
    mapped = [m for m in cat.mtmk_techniques if t.id in m.attack]
    if mapped:
        lines.append("  Microsoft Threat Matrix: " + ", ".join(f"{m.id} {m.name}" for m in mapped))
    if t.description:
        lines.append(f"  {t.description}")
    if records is not None:
        rules = [r for r in records if any(_names(tag, t.id) for tag in r.tags)]
        lines.append(f"  rules ({len(rules)}):" + ("" if rules else " none"))
        lines += [f"    [{r.level}] {r.title}  ({r.rule_id})" for r in rules]
    return lines


def _names(tag: str, technique_id: str) -> bool:
    try:
        item = parse_tag(tag)
    except MitreError:
        return False
    return isinstance(item, Technique) and item.id == technique_id


def cmd_show(args: argparse.Namespace) -> int:
    """Describe a technique, tactic or Microsoft Threat Matrix technique."""
    cat = catalogue()
    key = args.id.strip()
    try:
        if key.upper().startswith("MS-"):
            m = cat.mtmk(key)
            lines = [f"{m.id}  {m.name}  (Microsoft Threat Matrix for Kubernetes)"]
            lines.append("  tactics:   " + ", ".join(cat.tactic(s).name for s in m.tactics))
            maps = [f"{a} {cat.technique(a).name}" for a in m.attack] or ["none given"]
            lines.append("  ATT&CK:    " + ", ".join(maps))
        else:
            item: Technique | Tactic = parse_tag(
                key if key.lower().startswith("attack.") else "attack." + key
            )
            if isinstance(item, Technique):
                records = None if args.no_rules else _load(args.rules)
                lines = _show_technique(item, records)
            else:
                techs = [t for t in cat.techniques if item.shortname in t.tactics]
                lines = [f"{item.id}  {item.name}  (tactic {item.shortname})", f"  {item.url}"]
                lines += [f"  {t.id:<10} {t.name}" for t in techs]
    except TagError:
        print(
            f"klaxon mitre show: {key!r} is not a technique (T1611), tactic"
            " (privilege-escalation, TA0004) or Microsoft matrix (MS-TA9018) id",
            file=sys.stderr,
        )
        return 1
    except MitreError as exc:
        print(f"klaxon mitre show: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def register(subparsers: Any) -> None:
    """Add `klaxon mitre coverage|show` to the top-level parser."""
    mitre_p = subparsers.add_parser(
        "mitre", help="MITRE ATT&CK: rule coverage and catalogue look-ups"
    )
    mitre_sub = mitre_p.add_subparsers(dest="mitre_command", metavar="SUBCOMMAND")

    needs_subcommand(mitre_p)

    cov = mitre_sub.add_parser(
        "coverage",
        help="ATT&CK Containers matrix coverage of the rules",
        description="Print which ATT&CK v18.1 Containers techniques the rules cover.",
    )
    cov.add_argument(
        "--rules",
        nargs="+",
        action="extend",
        type=Path,
        metavar="PATH",
        help="rule files or folders (default: the bundled detections/rules)",
    )
    cov.add_argument("--navigator", type=Path, metavar="OUT.json", help="write a Navigator layer")
    cov.add_argument("--html", type=Path, metavar="OUT.html", help="write an HTML heatmap")
    cov.add_argument("--width", type=int, help="terminal width (default: terminal, at most 120)")
    cov.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    cov.set_defaults(func=cmd_coverage)

    show = mitre_sub.add_parser(
        "show",
        help="describe a technique, tactic or MS-TA9xxx technique",
        description="Describe T1611, privilege-escalation, TA0004 or MS-TA9018.",
    )
    show.add_argument("id", help="T1611, T1053.007, privilege-escalation, TA0004, MS-TA9018")
    show.add_argument("--rules", nargs="+", action="extend", type=Path, metavar="PATH")
    show.add_argument("--no-rules", action="store_true", help="do not list covering rules")
    show.set_defaults(func=cmd_show)
