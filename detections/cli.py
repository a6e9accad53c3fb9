"""``klaxon rules validate|test|explain|list|run|convert``: the rule author's command line.

Results go to stdout, diagnostics to stderr. Exit codes: 0 clean, 1 problems (or failures,
or ``explain`` found no match), 2 usage errors.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import orjson
import yaml

from detections.errors import DetectionError, EventFileError, RuleLoadError
from detections.rule import Rule, RuleSet

#: ``klaxon rules convert --target`` names (``detections.convert.TARGETS``, which imports pySigma).
CONVERT_TARGETS = ("splunk", "elasticsearch", "kusto", "sqlite")
if TYPE_CHECKING:
    from detections.selection import RuleSelection


def register(subparsers: Any) -> None:
    """Add ``klaxon rules ...`` to the top-level parser."""
    rules = subparsers.add_parser("rules", help="validate, test, explain and run detection rules")
    sub = rules.add_subparsers(dest="rules_command", metavar="SUBCOMMAND")
    rules.set_defaults(func=lambda args: _usage(rules))

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--lists",
            action="append",
            default=None,
            metavar="FILE",
            help="extra named-list file (append:/replace:); default $KLAXON_LISTS",
        )

    p = sub.add_parser("validate", help="load rules and report every problem and lint")
    p.add_argument(
        "paths", nargs="*", metavar="PATH", help="rule files or folders (default: packaged)"
    )
    p.add_argument("--strict", action="store_true", help="lint issues are errors too")
    common(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("test", help="run every rule's klaxon.tests fixtures")
    p.add_argument("paths", nargs="*", metavar="PATH")
    common(p)
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("explain", help="show field by field why a rule does or does not match")
    p.add_argument("rule", metavar="RULE", help="rule id, name, title, file stem, or a rule file")
    p.add_argument("event_file", metavar="EVENT_FILE", help="audit event (JSON or YAML; - = stdin)")
    p.add_argument("--rules", action="append", default=None, metavar="PATH", help="rules to search")
    p.add_argument(
        "--fixture",
        action="store_true",
        help="treat the event as partial: merge it over BASE_EVENT",
    )
    common(p)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("list", help="table of loaded rules, enabled or not and why")
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.add_argument(
        "--json",
        action="store_true",
        help='one JSON document instead: {"rules": [{"id", "name", "title", "level", "status",'
        ' "tactics", "techniques", "file", "line", "enabled", "why"}, ...]}',
    )
    for flag, env in (("enable", "KLAXON_RULES_ENABLE"), ("disable", "KLAXON_RULES_DISABLE")):
        p.add_argument(
            f"--{flag}",
            action="append",
            default=None,
            metavar="SELECTOR",
            help=f"id:/tag:/level:/status: selectors to {flag} (comma-separated, repeatable);"
            f" default ${env}",
        )
    common(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="evaluate rules over an audit log offline; alerts as JSON lines")
    p.add_argument(
        "args", nargs="+", metavar="RULES... LOGFILE", help="rule paths, then the log (- = stdin)"
    )
    p.add_argument("--cluster", default=None, help="cluster name for events that do not say")
    common(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "convert",
        help="write rules as SIEM queries through pySigma (the 'convert' extra)",
        description="Convert rules and correlations into queries of each --target; rules that "
        "cannot be converted are listed with the reason. The summary goes to stderr "
        "(to stdout with --summary).",
    )
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.add_argument(
        "--target",
        action="append",
        required=True,
        choices=(*CONVERT_TARGETS, "all"),
        help="query language (repeat for several; 'all' for every one)",
    )
    p.add_argument(
        "--field-prefix",
        default="",
        metavar="PREFIX",
        help="where the audit event sits in your documents, e.g. 'kubernetes.audit.' "
        "(splunk and elasticsearch)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per rule and target")
    p.add_argument("--summary", action="store_true", help="only the summary, on stdout")
    common(p)
    p.set_defaults(func=cmd_convert)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _lists(args: argparse.Namespace) -> list[str]:
    if args.lists:
        return list(args.lists)
    env = os.environ.get("KLAXON_LISTS", "").strip()
    return [p for p in env.split(os.pathsep) if p] if env else []


def _load(paths: Sequence[str] | None, args: argparse.Namespace, err: TextIO) -> RuleSet | None:
    from detections.loader import load_rules

    try:
        return load_rules(list(paths) if paths else None, _lists(args))
    except RuleLoadError as exc:
        for problem in exc.problems:
            print(problem, file=err)
        print(f"{len(exc.problems)} problem(s); no rules loaded", file=err)
        return None


def cmd_validate(
    args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Load rules; print problems and lints; exit 1 on problems (or lints with --strict)."""
    out, err = out or sys.stdout, err or sys.stderr
    ruleset = _load(args.paths, args, err)
    if ruleset is None:
        return 1
    for lint in ruleset.lints:
        print(lint, file=err)
    print_trust_notices(ruleset, err)
    tests = sum(len(r.klaxon.tests) for r in ruleset.rules)
    print(
        f"ok: {len(ruleset.rules)} rules, {len(ruleset.filters)} filters, "
        f"{len(ruleset.correlations)} correlations, {tests} tests; {len(ruleset.lints)} lint(s)",
        file=out,
    )
    return 1 if (args.strict and ruleset.lints) else 0


def print_trust_notices(ruleset: RuleSet, err: TextIO) -> None:
    """Say which allow-lists are empty: an empty ``cluster_networks`` means trust by name only,
    an empty policy list keeps its policy rule silent."""
    from detections.lists import empty_allow_lists

    empty = empty_allow_lists(ruleset.rules, ruleset.lists)
    rules = empty.pop("cluster_networks", None)
    if rules is not None:
        print(
            "notice: cluster_networks is empty, so trust is by name only: trusted identities "
            "(system_principals, control_plane_principals, ...) are trusted wherever they act "
            f"from, and {len(rules)} rule(s) cannot tell a token used from outside the cluster "
            "(fill it with your pod, service and node CIDRs: README, 'Conditional trust')",
            file=err,
        )
    for name, titles in sorted(empty.items()):
        silent = [t for t in titles if t not in (rules or ())]
        if silent:
            print(
                f"notice: {name} is empty, so {', '.join(map(repr, silent))} stay(s) silent "
                "until it is set",
                file=err,
            )


def cmd_test(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run fixtures; print each failure with its explanation; exit 1 on any failure."""
    out, err = out or sys.stdout, err or sys.stderr
    from detections.fixtures import run_fixtures

    ruleset = _load(args.paths, args, err)
    if ruleset is None:
        return 1
    report = run_fixtures(ruleset)
    for failure in report.failures:
        print(failure.render(), file=out)
    untested = [r for r in ruleset.rules if not r.klaxon.tests]
    passed = report.cases - len(report.failures)
    print(
        f"{passed}/{report.cases} fixtures passed in {report.rules} rules"
        + (f" ({len(untested)} rules have no fixtures)" if untested else ""),
        file=out,
    )
    return 0 if report.ok else 1


def _read_bytes(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise EventFileError(f"{name}: cannot read: {exc.strerror}") from None


def _decode(data: bytes, cluster: str | None) -> tuple[list[dict[str, Any]], list[str]]:
    """Events and rejection reasons, parsed exactly as the live pipeline parses them."""
    try:
        from schemas.normalize import decode_payload
    except ImportError:  # pragma: no cover - schemas ships with klaxon
        return _decode_plain(data), []
    result = decode_payload(data, cluster=cluster)
    return list(result.events), [r.reason for r in result.rejected]


def _decode_plain(data: bytes) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for line in data.splitlines():
        if line.strip():
            value = orjson.loads(line)
            if isinstance(value, dict):
                events.append(value)
    return events


def _read_event(name: str, fixture: bool) -> dict[str, Any]:
    data = _read_bytes(name)
    if fixture:
        try:
            partial = yaml.safe_load(data)
        except yaml.YAMLError as exc:
            raise EventFileError(f"{name}: not JSON or YAML: {exc}") from None
        if not isinstance(partial, dict):
            raise EventFileError(f"{name}: expected one event (a mapping)")
        from detections.fixtures import fixture_event

        return fixture_event(partial)
    events, rejected = _decode(data, None)
    if len(events) != 1:
        detail = f" ({'; '.join(rejected[:3])})" if rejected else ""
        raise EventFileError(
            f"{name}: expected exactly one usable audit event, found {len(events)}{detail}; "
            "use --fixture for a partial event"
        )
    return events[0]


def cmd_explain(
    args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Explain one rule against one event; exit 0 when it matches, 1 when it does not."""
    out, err = out or sys.stdout, err or sys.stderr
    from detections.engine import Engine

    paths = args.rules
    key = args.rule
    if Path(args.rule).is_file():
        paths = [args.rule]
        key = None
    ruleset = _load(paths, args, err)
    if ruleset is None:
        return 2
    engine = Engine(ruleset)
    try:
        event = _read_event(args.event_file, args.fixture)
        explanation = engine.explain(key if key is not None else ruleset.rules[0].id, event)
    except (DetectionError, IndexError) as exc:
        print(f"error: {exc or 'no rule in file'}", file=err)
        return 2
    print(explanation.render(), file=out)
    return 0 if explanation.matched else 1


def cmd_list(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print a table (id, level, ATT&CK techniques, title, source file), or with ``--json``
    one JSON document with the same rules in the same order (keys are stable, see `rule_json`).
    """
    out, err = out or sys.stdout, err or sys.stderr
    ruleset = _load(args.paths, args, err)
    if ruleset is None:
        return 1
    try:
        selection = _selection(args)
    except ValueError as exc:
        print(f"klaxon rules list: {exc}", file=err)
        return 2
    decisions = selection.apply(ruleset).decisions
    rules = sorted(ruleset.rules, key=lambda r: (r.file, r.line))
    if getattr(args, "json", False):
        document = {
            "rules": [
                {**rule_json(r), "enabled": decisions[r.id].enabled, "why": decisions[r.id].reason}
                for r in rules
            ]
        }
        out.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    rows = [("ID", "LEVEL", "ATT&CK", "TITLE", "ENABLED", "FILE")]
    for r in rules:
        d = decisions[r.id]
        enabled = "yes" if d.enabled else f"no ({d.reason})"
        rows.append((r.id, r.level or "-", ",".join(r.techniques) or "-", r.title, enabled, r.file))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(5)]
        print("  ".join([*cells, row[5]]), file=out)
    off = sum(not decisions[r.id].enabled for r in rules)
    print(f"{len(rules)} rules, {off} disabled ({selection.describe()})", file=err)
    return 0


def _selection(args: argparse.Namespace) -> RuleSelection:
    """Selectors from ``--enable``/``--disable``, else ``$KLAXON_RULES_ENABLE``/``_DISABLE``
    (the worker's settings, `pipeline.config`)."""
    from detections.selection import RuleSelection, parse_list

    def given(flag: list[str] | None, env: str) -> list[str]:
        if flag is not None:
            return [s for value in flag for s in parse_list(value)]
        return list(parse_list(os.environ.get(env, "")))

    return RuleSelection.parse(
        enable=given(getattr(args, "enable", None), "KLAXON_RULES_ENABLE"),
        disable=given(getattr(args, "disable", None), "KLAXON_RULES_DISABLE"),
    )


def rule_json(rule: Rule) -> dict[str, Any]:
    """One rule of ``klaxon rules list --json``: always these keys, null when the rule says
    nothing; ``file`` is relative to the working directory when the file is under it.

    >>> from detections.condition import Ref
    >>> sorted(rule_json(Rule("t", "i", {}, Ref("s"), "s", "r.yml", tags=("attack.t1611",))))
    ['file', 'id', 'level', 'line', 'name', 'status', 'tactics', 'techniques', 'title']
    """
    return {
        "id": rule.id,
        "name": rule.name,
        "title": rule.title,
        "level": rule.level,
        "status": rule.status,
        "tactics": list(rule.tactics),
        "techniques": list(rule.techniques),
        "file": rule.file,
        "line": rule.line,
    }


def cmd_run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Evaluate rules over a log file; one alert JSON per line on stdout."""
    out, err = out or sys.stdout, err or sys.stderr
    from detections.alert import to_alert
    from detections.engine import Engine

    *rule_paths, logfile = args.args
    ruleset = _load(rule_paths or None, args, err)
    if ruleset is None:
        return 1
    engine = Engine(ruleset)
    try:
        events, rejected = _decode(_read_bytes(logfile), args.cluster)
    except DetectionError as exc:
        print(f"error: {exc}", file=err)
        return 2
    for reason in rejected[:20]:
        print(f"{logfile}: rejected: {reason}", file=err)
    matches = 0
    for event in events:
        for match in engine.evaluate(event):
            matches += 1
            out.write(orjson.dumps(to_alert(match)).decode() + "\n")
    print(
        f"{len(events)} events, {len(rejected)} rejected, {matches} alerts "
        f"({len(ruleset.rules)} rules)",
        file=err,
    )
    return 0


def cmd_convert(
    args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Queries (or JSON lines) on stdout, the per-target summary on stderr; exit 1 when the
    rules do not load or pySigma is not installed (rules that cannot convert are not errors)."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        from detections.convert import convert_ruleset
        from detections.convert.render import write_json, write_queries, write_summary
    except ImportError as exc:
        print(
            f"error: klaxon rules convert needs pySigma and its backends ({exc}); "
            "install them with: pip install 'klaxon[convert]'",
            file=err,
        )
        return 1
    ruleset = _load(args.paths, args, err)
    if ruleset is None:
        return 1
    names = CONVERT_TARGETS if "all" in args.target else tuple(dict.fromkeys(args.target))
    try:
        reports = [convert_ruleset(ruleset, name, field_prefix=args.field_prefix) for name in names]
    except ValueError as exc:
        print(f"error: {exc}", file=err)
        return 2
    if args.summary:
        write_summary(reports, out)
        return 0
    for report in reports:
        (write_json if args.json else write_queries)(report, out)
    write_summary(reports, err)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``klaxon rules ...`` alone (``python -m detections rules ...``), without other packages."""
    parser = argparse.ArgumentParser(prog="klaxon")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    register(sub)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    result: int = func(args)
    return result
