"""``klaxon config show``: the configuration in effect, secrets masked.

Every setting of `pipeline.config.Settings` with its variable and value (``***`` for a
secret), marked ``(file)`` when it came from the ``KLAXON_CONFIG`` file and ``(default)`` when
neither that file nor the environment sets it; ``--json`` prints one object. A bad value is
reported as the worker would report it (exit 2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from klaxon.cli import needs_subcommand

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``config`` (and ``config show``) to the ``klaxon`` parser."""
    p = subparsers.add_parser("config", help="show the configuration in effect")
    sub = p.add_subparsers(dest="config_command", metavar="COMMAND")
    show = sub.add_parser(
        "show",
        help="print every setting and its value (secrets masked)",
        description="Print every setting read from the environment and its effective value;"
        " secrets are shown as ***.",
    )
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(func=_show)

    needs_subcommand(p)


def _show(args: argparse.Namespace) -> int:
    from pipeline.config import CONFIG_VARIABLE, Settings, config_file, effective
    from pipeline.errors import ConfigError

    try:
        shown = effective(Settings.from_env())
        from_file = config_file(os.environ)
    except ConfigError as exc:
        print(f"klaxon config show: {exc}", file=sys.stderr)
        return 2
    shown[CONFIG_VARIABLE] = os.environ.get(CONFIG_VARIABLE, "").strip()
    if args.json:
        print(json.dumps(shown, indent=2, sort_keys=True))
        return 0
    width = max(map(len, shown))
    for variable in sorted(shown):
        if os.environ.get(variable, ""):
            mark = ""
        elif variable in from_file:
            mark = "  (file)"
        else:
            mark = "  (default)"
        print(f"{variable:<{width}}  {shown[variable] or '-'}{mark}")
    return 0
