"""The `klaxon` command: one argparse tree, each command module registers its own subcommands.

Every command module exposes ``register(subparsers)``, which adds its parsers and sets
``func`` (``(argparse.Namespace) -> int``) as a default. `COMMANDS` says which module adds
which top-level commands, so ``klaxon status`` imports only ``pipeline.cli`` (the Kubernetes
liveness probe runs it with a 1-5 s timeout); ``klaxon --help`` or an unknown command imports
them all. Importing a command module must stay cheap: Faust, aiokafka, river, scikit-learn,
SciPy and NumPy are imported inside the functions that run a command, never at module level
(`tests/klaxon/test_cli_imports.py` checks it).

Exit codes: 0 clean, 1 findings or failure, 2 usage error, 141 stdout closed early
(``klaxon rules list | head -1``: quiet, like other Unix tools killed by SIGPIPE).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence

# (module, the top-level commands it adds), in `klaxon --help` order. A module that fails to
# import is a bug, not a missing feature.
COMMANDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("detections.cli", ("rules",)),  # klaxon rules validate|test|explain|list|run
    ("klaxon.mitre_cli", ("mitre",)),  # klaxon mitre coverage|show
    ("pipeline.cli", ("worker", "status", "topics")),
    ("klaxon.demo", ("demo", "up")),  # composes pipeline (broker, worker) and replay
    ("klaxon.replay_cli", ("replay",)),  # replay's producer with pipeline's Settings
    ("klaxon.ingest_cli", ("ingest",)),  # klaxon ingest webhook (aiohttp imported when run)
    ("klaxon.anomaly_cli", ("anomaly",)),  # klaxon anomaly train|score
    ("klaxon.config_cli", ("config",)),  # klaxon config show
    ("klaxon.outputs_cli", ("outputs",)),  # alert topic -> webhook, Splunk HEC, ES, Slack
    ("klaxon.dashboard_cli", ("dashboard",)),  # the Grafana dashboard against /metrics
    ("klaxon.alerts_cli", ("alerts",)),  # klaxon alerts tail|stats (aiokafka imported when run)
    ("klaxon.native", ("native",)),  # klaxon native build|status (mypyc, optional)
)

#: Exit status after stdout was closed by the reader: 128 + SIGPIPE, as a shell reports it.
EXIT_BROKEN_PIPE = 141


def needs_subcommand(group: argparse.ArgumentParser) -> None:
    """Make the command group ``group`` print its help and exit 2 when run without one of its
    subcommands (each command module's groups: ``klaxon mitre``, ``klaxon native``…)."""

    def usage(_args: argparse.Namespace) -> int:
        group.print_help(sys.stderr)
        return 2

    group.set_defaults(func=usage)


def _modules_for(command: str | None) -> list[str]:
    """The command modules to import for ``command`` (all of them when unknown or None)."""
    for module, names in COMMANDS:
        if command in names:
            return [module]
    return [module for module, _ in COMMANDS]


def _command_in(argv: Sequence[str]) -> str | None:
    """The top-level command ``argv`` starts with (None for ``--help`` and the like)."""
    return argv[0] if argv and not argv[0].startswith("-") else None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for ``command`` alone, or with every command when ``command`` is None."""
    parser = argparse.ArgumentParser(
        prog="klaxon", description="Threat detection for Kubernetes audit logs."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _modules_for(command):
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(_command_in(args_list))
        args = parser.parse_args(args_list)
        args.command_line = args_list  # as given (`klaxon worker --processes` repeats it)
        func = getattr(args, "func", None)
        if func is None:
            parser.print_help(sys.stderr)
            return 2
        result: int = func(args)
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
    except BrokenPipeError:
        # The reader went away (`| head`). Python would print a traceback and then another
        # error when flushing stdout at exit; point stdout at /dev/null and leave quietly.
        # (The recipe of the `signal` module's documentation, "Note on SIGPIPE".)
        with contextlib.suppress(OSError, ValueError):  # stdout without a file descriptor
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        return EXIT_BROKEN_PIPE
    return result
