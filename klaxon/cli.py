"""The `klaxon` command: one argparse tree, each package registers its own subcommands.

Every subcommand module exposes ``register(subparsers)``, which adds its parsers and sets
``func`` (``(argparse.Namespace) -> int``) as a default. Modules are imported here, not at
package import time, so `klaxon rules ...` never loads Kafka code.

Exit codes: 0 clean, 1 findings or failure, 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# (module, what it adds). A module that fails to import is a bug, not a missing feature.
COMMAND_MODULES = (
    "detections.cli",  # klaxon rules validate|test|explain|list|run
    "klaxon.mitre_cli",  # klaxon mitre coverage (mitre itself imports nothing internal)
    "pipeline.cli",  # klaxon worker|status|topics
    "klaxon.demo",  # klaxon demo|up: composes pipeline (broker, worker) and replay (producer)
    "klaxon.replay_cli",  # klaxon replay: replay's producer with pipeline's Settings
    "detections.stateful.cli",  # klaxon anomaly train|score
)


def build_parser() -> argparse.ArgumentParser:
    """Build the full parser from every registered command module."""
    parser = argparse.ArgumentParser(
        prog="klaxon", description="Threat detection for Kubernetes audit logs."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # that package has no CLI yet
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    result: int = func(args)
    return result
