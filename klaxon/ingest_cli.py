"""``klaxon ingest webhook`` / ``klaxon ingest file``: receive the API server's audit
webhook, or follow its audit log file, and write the raw topic.

Kafka settings (bootstrap servers, raw and dead-letter topics, the default cluster name) come
from `pipeline.config.Settings`; the receiver's own options are flags. aiohttp and aiokafka are
imported only when the command runs (`klaxon --help` stays light). See docs/operations.md,
"Intake: the audit webhook" and "Intake: following the audit log file".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from klaxon.cli import needs_subcommand
from pipeline.config import Settings
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from pipeline.sources.file import FileConfig
    from pipeline.sources.webhook import WebhookConfig, WebhookSource
    from pipeline.sources.writer import RawTopicWriter
    from pipeline.telemetry import IntakeMetrics

__all__ = ["config_from_args", "file_config_from_args", "register", "telemetry"]

_MIB = 1024 * 1024


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``ingest`` (and ``ingest webhook``) to the ``klaxon`` parser."""
    p = subparsers.add_parser(
        "ingest",
        help="receive audit events from a cluster and write them to the raw topic",
        description="Intakes: sources that write audit payloads to the raw topic.",
    )
    sub = p.add_subparsers(dest="intake", metavar="INTAKE")
    w = sub.add_parser(
        "webhook",
        help="HTTPS receiver for the API server's audit webhook backend",
        description="Receive the kube-apiserver audit webhook (EventList POSTs) over HTTPS;"
        " answer 200 once Kafka acknowledged the events, 503 (Retry-After) when it did not.",
    )
    _add_listen_flags(w)
    _add_auth_flags(w)
    _add_limit_flags(w)
    w.set_defaults(func=_webhook)
    _add_file_parser(sub)

    needs_subcommand(p)


#: Default size above which one event (a webhook item, a log line) is dead-lettered.
MAX_EVENT_BYTES = 256 * 1024


def _add_kafka_flags(p: argparse.ArgumentParser, timeout_then: str) -> None:
    """Where both intakes write: bootstrap, cluster, acknowledgement timeout, idempotence."""
    p.add_argument(
        "--bootstrap",
        metavar="HOST:PORT[,...]",
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS)",
    )
    p.add_argument(
        "--cluster",
        help="cluster name: raw message key and klaxon-cluster header (default: $KLAXON_CLUSTER)",
    )
    p.add_argument(
        "--kafka-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help=f"seconds to wait for Kafka's acknowledgement {timeout_then} (default %(default)s)",
    )
    p.add_argument(
        "--idempotent", action="store_true", help="idempotent producer (Apache Kafka; not Tansu)"
    )
    p.add_argument(
        "--metrics-address",
        metavar="HOST:PORT",
        help="where /metrics, /healthz and /readyz are served, or off (default:"
        " $KLAXON_METRICS_ADDRESS, else 127.0.0.1:9464)",
    )


def _add_listen_flags(w: argparse.ArgumentParser) -> None:
    _add_kafka_flags(w, "before answering 503")
    w.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s)")
    w.add_argument("--port", type=int, default=9443, help="port (default %(default)s)")
    w.add_argument("--path", default="/audit", help="URL path of the webhook (default %(default)s)")
    w.add_argument("--tls-cert", type=Path, metavar="PEM", help="server certificate (chain)")
    w.add_argument("--tls-key", type=Path, metavar="PEM", help="server private key")
    w.add_argument(
        "--insecure-no-tls", action="store_true", help="plain HTTP (audit events in clear text)"
    )
    w.add_argument(
        "--reload-interval",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds between checks of the certificate, key and token files (default 10)",
    )


def _add_auth_flags(w: argparse.ArgumentParser) -> None:
    w.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="bearer tokens, one a line, re-read when it changes (also: $KLAXON_WEBHOOK_TOKENS,"
        " comma-separated)",
    )
    w.add_argument(
        "--client-ca", type=Path, metavar="PEM", help="CA that client certificates must chain to"
    )
    w.add_argument(
        "--allow-client",
        action="append",
        default=[],
        metavar="NAME",
        help="client certificate CN or SAN allowed (repeat; default: any the CA signed)",
    )
    w.add_argument("--insecure-no-auth", action="store_true", help="accept requests from anyone")


def _add_limit_flags(w: argparse.ArgumentParser) -> None:
    w.add_argument(
        "--max-body-bytes",
        type=int,
        default=12 * _MIB,
        metavar="N",
        help="request body limit, also after gzip decompression (default 12 MiB)",
    )
    w.add_argument(
        "--max-event-bytes",
        type=int,
        default=MAX_EVENT_BYTES,
        metavar="N",
        help="larger events are dead-lettered, the rest written (default 256 KiB)",
    )
    w.add_argument(
        "--max-concurrent",
        type=int,
        default=16,
        metavar="N",
        help="requests at once; more are answered 503 (default %(default)s)",
    )
    w.add_argument(
        "--retry-after",
        type=int,
        default=5,
        metavar="S",
        help="Retry-After of 503 answers (default %(default)s)",
    )


def _add_file_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    f = sub.add_parser(
        "file",
        help="follow the API server's audit log file (--audit-log-path, JSON lines)",
        description="Follow a JSON-lines audit log as kube-apiserver writes and rotates it"
        " (rename + new file, or copytruncate); write batches to the raw topic and checkpoint"
        " the position once Kafka acknowledged them.",
    )
    f.add_argument("path", type=Path, metavar="PATH", help="the audit log (--audit-log-path)")
    _add_kafka_flags(f, "of a batch (then retried)")
    f.add_argument(
        "--checkpoint",
        type=Path,
        metavar="FILE",
        help="position file (default: $KLAXON_DATA_DIR/intake/file-<name>-<hash>.checkpoint)",
    )
    f.add_argument(
        "--rotated-glob",
        action="append",
        default=[],
        metavar="PATTERN",
        help="rotated files beside PATH (repeat; default: audit-*.log and audit.log.[0-9]* for"
        " audit.log; compressed files are skipped)",
    )
    f.add_argument("--batch", type=int, default=200, metavar="N", help="events per message")
    f.add_argument(
        "--flush-interval",
        type=float,
        default=0.5,
        metavar="S",
        help="send a batch not full after this many seconds (default %(default)s)",
    )
    f.add_argument(
        "--poll-interval",
        type=float,
        default=0.1,
        metavar="S",
        help="seconds between checks of an idle file (default %(default)s)",
    )
    f.add_argument(
        "--partial-wait",
        type=float,
        default=1.0,
        metavar="S",
        help="at rotation, wait this long for a last line's newline (default %(default)s)",
    )
    f.add_argument(
        "--max-event-bytes",
        type=int,
        default=MAX_EVENT_BYTES,
        metavar="N",
        help="longer lines are dead-lettered (default 256 KiB)",
    )
    f.set_defaults(func=_file)


def file_config_from_args(args: argparse.Namespace, settings: Settings) -> FileConfig:
    """The follower's configuration from its flags (`ConfigError` if inconsistent, or if the
    checkpoint exists and cannot be read)."""
    import hashlib

    from pipeline.sources.file import FileConfig, read_checkpoint

    path = args.path.expanduser().absolute()
    checkpoint = args.checkpoint
    if checkpoint is None:
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
        checkpoint = settings.data_dir / "intake" / f"file-{path.name}-{digest}.checkpoint"
    config = FileConfig(
        path=path,
        checkpoint=checkpoint,
        cluster=args.cluster or settings.cluster,
        rotated_globs=tuple(args.rotated_glob),
        max_events=args.batch,
        max_event_bytes=args.max_event_bytes,
        flush_interval=args.flush_interval,
        poll_interval=args.poll_interval,
        partial_wait=args.partial_wait,
    )
    config.check()
    read_checkpoint(config.checkpoint)  # a damaged checkpoint stops the start, named
    return config


def _file(args: argparse.Namespace) -> int:
    return _run_intake("file", "the follower writes to Kafka", args, file_config_from_args, _follow)


def _raw_writer(settings: Settings, bootstrap: str, args: argparse.Namespace) -> RawTopicWriter:
    """The raw-topic writer both intakes use, from their shared Kafka flags."""
    from pipeline.sources.writer import RawTopicWriter

    return RawTopicWriter(
        bootstrap,
        settings.topic_raw,
        settings.topic_deadletter,
        timeout=args.kafka_timeout,
        idempotent=args.idempotent,
        client_options=settings.kafka_security.client_kwargs(),
    )


async def _follow(
    config: FileConfig, settings: Settings, bootstrap: str, args: argparse.Namespace
) -> None:
    from pipeline.sources.file import FileSource

    writer = _raw_writer(settings, bootstrap, args)
    source = FileSource(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await writer.start()
    print(
        f"klaxon ingest file: following {config.path} (cluster {config.cluster}, checkpoint"
        f" {config.checkpoint}) -> {settings.topic_raw} on {bootstrap}",
        file=sys.stderr,
        flush=True,
    )
    task = asyncio.create_task(source.forward(writer), name="klaxon-file-forward")
    stopped = asyncio.create_task(stop.wait())
    try:
        counts = {"events": "lines", "messages": "batches", "dead_lettered": "dead_lettered"}
        async with telemetry(settings, "file", writer, source.counters, counts):
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        task.cancel()  # a batch in flight is finished and checkpointed first
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await task  # raises the follower's error, if it stopped on one
        finally:
            source.close()
            await writer.stop()


class TelemetryUnavailable(PipelineError):
    """The metrics address cannot be listened on."""


@contextlib.asynccontextmanager
async def telemetry(
    settings: Settings,
    intake: str,
    writer: RawTopicWriter,
    counters: dict[str, int],
    names: dict[str, str] | None = None,
) -> AsyncIterator[IntakeMetrics | None]:
    """/metrics, /healthz, /readyz of an intake while the block runs (None when ``off``).

    Ready while its writer is (connected, topics there); events, messages and dead letters
    are read from ``counters`` (keys ``names``: events, messages, dead_lettered).
    """
    from pipeline.config import parse_address

    address = parse_address(settings.metrics_address)
    if address is None:
        yield None
        return
    from pipeline.telemetry import IntakeMetrics, TelemetryServer

    keys = names or {"events": "events", "messages": "", "dead_lettered": "dead_lettered"}
    metrics = IntakeMetrics(intake)
    metrics.events = lambda: (
        counters.get(keys["events"], 0),
        counters.get(keys["messages"], 0) if keys["messages"] else writer.written,
        counters.get(keys["dead_lettered"], 0),
    )

    def unready() -> list[str]:
        return [] if writer.ready else [writer.last_error or "not connected to Kafka"]

    server = TelemetryServer(
        metrics.registry, address, token=settings.metrics_bearer, unready=unready
    )
    try:
        await server.start()
    except OSError as exc:
        raise TelemetryUnavailable(
            f"cannot serve metrics on {settings.metrics_address}: {exc}"
        ) from exc
    metrics.server = server
    print(f"klaxon ingest {intake}: metrics at {server.url}/metrics", file=sys.stderr, flush=True)
    try:
        yield metrics
    finally:
        await server.stop()


def config_from_args(args: argparse.Namespace, settings: Settings) -> WebhookConfig:
    """The receiver's configuration from its flags; raises `ConfigError` when it is unsafe
    or inconsistent (no TLS, no authentication, half a certificate pair)."""
    from pipeline.errors import ConfigError
    from pipeline.sources.webhook import Limits, TlsFiles, TokenFile, WebhookConfig

    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("give both --tls-cert and --tls-key")
    if args.client_ca is not None and args.tls_cert is None:
        raise ConfigError("--client-ca needs TLS (--tls-cert and --tls-key)")
    tls = None
    if args.tls_cert is not None:
        tls = TlsFiles(args.tls_cert, args.tls_key, args.client_ca)
        _ = tls.context  # load now: a bad file stops the start
    env_tokens = [t.get_secret_value() for t in settings.webhook_tokens]
    tokens = TokenFile(args.token_file, env_tokens) if args.token_file or env_tokens else None
    config = WebhookConfig(
        cluster=args.cluster or settings.cluster,
        host=args.host,
        port=args.port,
        path=args.path,
        tls=tls,
        tokens=tokens,
        allowed_clients=frozenset(args.allow_client),
        insecure_no_auth=args.insecure_no_auth,
        limits=Limits(
            max_body_bytes=args.max_body_bytes,
            max_event_bytes=args.max_event_bytes,
            max_concurrent=args.max_concurrent,
            retry_after=args.retry_after,
        ),
        reload_interval=args.reload_interval,
    )
    config.check(insecure_no_tls=args.insecure_no_tls)
    return config


def _webhook(args: argparse.Namespace) -> int:
    what = "the webhook writes to a Kafka cluster"
    return _run_intake("webhook", what, args, config_from_args, _serve)


def _run_intake(
    name: str,
    what: str,
    args: argparse.Namespace,
    configure: Callable[[argparse.Namespace, Settings], Any],
    run: Callable[[Any, Settings, str, argparse.Namespace], Coroutine[Any, Any, None]],
) -> int:
    """Settings and configuration (exit 2 on a mistake), logging, then ``run`` until stopped
    (exit 1 if it fails)."""
    import logging

    from pipeline.cli import with_metrics_address

    prefix = f"klaxon ingest {name}"
    try:
        settings = with_metrics_address(Settings.from_env(), args.metrics_address)
        bootstrap = settings.bootstrap_for(args.bootstrap, what)
        config = configure(args, settings)
    except PipelineError as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        asyncio.run(run(config, settings, bootstrap, args))
    except PipelineError as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the webhook cannot bind its port; the file cannot be read
        doing = f"cannot listen on {args.host}:{args.port}: " if hasattr(args, "port") else ""
        print(f"{prefix}: {doing}{exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(
    config: WebhookConfig, settings: Settings, bootstrap: str, args: argparse.Namespace
) -> None:
    from pipeline.sources.webhook import WebhookSource

    writer = _raw_writer(settings, bootstrap, args)
    source = WebhookSource(config, writer)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await writer.start()
    try:
        async with telemetry(settings, "webhook", writer, source.counters) as metrics:
            source.metrics = metrics
            await _listen(config, settings, bootstrap, source, stop)
    finally:
        await source.stop()
        await writer.stop()


async def _listen(
    config: WebhookConfig,
    settings: Settings,
    bootstrap: str,
    source: WebhookSource,
    stop: asyncio.Event,
) -> None:
    await source.start()
    scheme = "http" if config.tls is None else "https"
    print(
        f"klaxon ingest webhook: listening on {scheme}://{config.host}:{source.port}"
        f"{config.path} (cluster {config.cluster}) -> {settings.topic_raw} on {bootstrap}",
        file=sys.stderr,
        flush=True,
    )
    await stop.wait()
