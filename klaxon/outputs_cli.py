"""``klaxon outputs --config outputs.yml``: deliver the alert topic to SIEMs and chat webhooks.

Each output in the file reads the alert topic with its own consumer group and commits only
after the output acknowledged (see `pipeline.outputs`). Kafka connection, topic names and the
app id come from the worker's settings (``KAFKA_BOOTSTRAP_SERVERS``, ``KLAXON_TOPIC_ALERTS``,
``KLAXON_TOPIC_DEADLETTER``, ``KLAXON_APP_ID``, the ``KLAXON_KAFKA_*`` security variables).
``--check`` validates the file and reads every credential it names, then prints the outputs
(never a credential) and exits.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.config import Settings
from pipeline.errors import PipelineError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``outputs`` to the ``klaxon`` parser."""
    p = subparsers.add_parser(
        "outputs",
        help="deliver alerts to webhooks, Splunk HEC, Elasticsearch, Slack (one config file)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--config", required=True, type=Path, metavar="FILE", help="outputs.yml")
    p.add_argument("--bootstrap", metavar="HOST:PORT[,...]", help="Kafka (default: env)")
    p.add_argument("--check", action="store_true", help="validate the file and exit")
    p.set_defaults(func=_outputs)


def _describe(output: object) -> str:
    from pipeline.outputs import Output

    assert isinstance(output, Output)
    c = output.config
    fmt = output.format.name if output.format else c.type
    shape = " (falco shape)" if c.shape == "falco" else ""
    filters = [f"severity >= {c.min_severity}"]
    filters += [
        f"{k} {', '.join(v)}"
        for k, v in (
            ("rules", c.rules),
            ("not rules", c.exclude_rules),
            ("tags", c.tags),
            ("namespaces", c.namespaces),
        )
        if v
    ]
    return (
        f"{c.name}: {c.type}, format {fmt}{shape}, {'; '.join(filters)}; batches of "
        f"{c.batch.max_alerts}, token {'set' if output.token else 'none'}"
    )


def _outputs(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal

    from pipeline.outputs import OUTPUTS, Output
    from pipeline.outputs.config import load_outputs
    from pipeline.outputs.runner import run_outputs

    try:
        file = load_outputs(args.config)
        unknown = [o.type for o in file.outputs if o.type not in OUTPUTS]
        if unknown:
            print(
                f"klaxon outputs: {args.config}: unknown type {unknown[0]!r} "
                f"(one of {', '.join(OUTPUTS)})",
                file=sys.stderr,
            )
            return 2
        outputs: list[Output] = [OUTPUTS[o.type](o) for o in file.outputs]
        settings = Settings.from_env()
        if args.check:
            for output in outputs:
                print(_describe(output))
            return 0
        bootstrap = settings.bootstrap_for(args.bootstrap, "outputs read a running cluster")
    except PipelineError as exc:
        print(f"klaxon outputs: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        for output in outputs:
            print(f"klaxon outputs: {_describe(output)}", file=sys.stderr)
        await run_outputs(
            outputs,
            bootstrap=bootstrap,
            alerts_topic=settings.topic_alerts,
            deadletter_topic=settings.topic_deadletter,
            app_id=settings.app_id,
            client_kwargs=settings.kafka_security.client_kwargs(),
            stop=stop,
        )

    asyncio.run(main())
    return 0
