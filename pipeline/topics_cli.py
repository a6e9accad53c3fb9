"""``klaxon topics create``: create Klaxon's topics on an existing cluster, idempotently.

Call `register(subparsers)` from ``pipeline/cli.py`` (or list this module in
``klaxon/cli.py``'s ``COMMAND_MODULES``). Settings come from the environment
(`pipeline.config`); flags override them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from pipeline.errors import ConfigError, PipelineError

__all__ = ["register", "register_topics_cli"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``topics create`` to the ``klaxon`` parser."""
    topics = subparsers.add_parser("topics", help="manage Klaxon's Kafka topics")
    sub = topics.add_subparsers(dest="topics_command", metavar="ACTION", required=True)
    create = sub.add_parser(
        "create",
        help="create the raw, events, alerts, dead-letter and stateful topics"
        " (existing ones are checked)",
    )
    create.add_argument(
        "--bootstrap",
        metavar="HOST:PORT[,...]",
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS)",
    )
    create.add_argument("--partitions", type=int, help="default: $KLAXON_PARTITIONS or 4")
    create.add_argument(
        "--replication-factor", type=int, help="default: $KLAXON_REPLICATION_FACTOR or 1"
    )
    create.set_defaults(func=_create)


register_topics_cli = register


def _create(args: argparse.Namespace) -> int:
    from pipeline.config import Settings
    from pipeline.topics import ensure_topics, stateful_topic_specs, topic_specs

    try:
        settings = Settings.from_env()
    except ConfigError as exc:  # like `klaxon worker` and `klaxon replay`: a usage error
        print(f"klaxon topics create: {exc}", file=sys.stderr)
        return 2
    try:
        overrides: dict[str, object] = {}
        if args.partitions is not None:
            overrides["partitions"] = args.partitions
        if args.replication_factor is not None:
            overrides["replication_factor"] = args.replication_factor
        if any(v < 1 for v in overrides.values() if isinstance(v, int)):
            print("klaxon topics create: counts must be at least 1", file=sys.stderr)
            return 2
        settings = settings.replace(**overrides)
        try:
            bootstrap = settings.bootstrap_for(
                args.bootstrap, "the embedded broker creates its own topics"
            )
        except ConfigError as exc:  # a usage error (exit 2), unlike a broker's refusal (1)
            print(f"klaxon topics create: {exc}", file=sys.stderr)
            return 2
        internal = stateful_topic_specs(settings)
        outcome = asyncio.run(ensure_topics(bootstrap, settings, extra=internal))
    except PipelineError as exc:
        print(f"klaxon topics create: {exc}", file=sys.stderr)
        return 1
    for spec in [*topic_specs(settings), *internal]:
        configs = " ".join(f"{k}={v}" for k, v in sorted(spec.configs.items()))
        print(
            f"{outcome[spec.name]:<8} {spec.name}  partitions={spec.partitions}"
            f" replication={spec.replication_factor} {configs}"
        )
    return 0
