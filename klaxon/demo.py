"""``klaxon demo`` and ``klaxon up``: the whole pipeline on one machine, no Kafka needed.

``demo``: start the embedded Tansu broker (unless ``KAFKA_BOOTSTRAP_SERVERS``/``--bootstrap``
names a cluster), create the topics, start a ``klaxon worker`` subprocess, replay the bundled
sample (or the given files) into the raw topic and print alerts as they arrive. It exits when
the worker has caught up and no alert came for ``--idle`` seconds; ``--follow`` keeps going.
``up``: broker and worker, printing alerts, until Ctrl-C.

Every child (broker, worker) is stopped on exit, Ctrl-C included; the worker also gets
SIGTERM if this process dies (Linux ``PR_SET_PDEATHSIG``).

This is the command-line layer on purpose: it composes `pipeline` (broker, topics, worker)
and `replay` (the producer), which do not import each other.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from pipeline.config import Settings
from pipeline.errors import PipelineError, WorkerError
from pipeline.metrics import read_status
from pipeline.security import KafkaSecurity
from replay.sample import SAMPLE_PATH

__all__ = ["format_row", "header_row", "register", "sample_files"]

_COLUMNS = (
    ("time", 8),
    ("severity", 8),
    ("count", 5),
    ("rule", 44),
    ("user", 34),
    ("object", 34),
)


def sample_files() -> list[Path]:
    """The bundled sample audit logs (``replay/sample/*.jsonl.gz``)."""
    return sorted(SAMPLE_PATH.parent.glob("*.jsonl.gz"))


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def header_row() -> str:
    """The table header printed above alerts."""
    return "  ".join(f"{name.upper():<{w}}" for name, w in _COLUMNS) + "  ATT&CK"


def format_row(alert: dict[str, Any]) -> str:
    """One alert as a table row: time, severity, matches so far (``group.count``; ``-`` for
    a stateful alert), rule title, user, object, ATT&CK techniques.

    >>> from schemas.alert import example_alert
    >>> print(format_row(example_alert()))  # doctest: +NORMALIZE_WHITESPACE
    13:58:49  high      1  Privileged container created  minikube-user
    pods default/nginx  T1611
    """
    when = str(alert.get("event_time") or "")
    clock = when[11:19] if len(when) >= 19 else when
    rule = alert.get("rule") or {}
    user = (alert.get("user") or {}).get("username") or "-"
    obj = alert.get("object") or {}
    where = "/".join(p for p in (obj.get("namespace"), obj.get("name")) if p)
    what = " ".join(p for p in (obj.get("resource"), obj.get("subresource")) if p)
    techniques = [t.get("id", "") for t in (alert.get("attack") or {}).get("techniques", [])]
    count = (alert.get("group") or {}).get("count", "-")
    cells = (
        clock,
        alert.get("severity", ""),
        count,
        rule.get("title", ""),
        user,
        f"{what} {where}",
    )
    text = "  ".join(
        f"{_cut(str(c).strip(), w):<{w}}" for c, (_, w) in zip(cells, _COLUMNS, strict=True)
    )
    return f"{text}  {','.join(techniques) or '-'}"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``demo`` and ``up`` to the ``klaxon`` parser."""
    demo = subparsers.add_parser(
        "demo",
        help="embedded broker + worker + bundled sample replay; prints alerts",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    demo.add_argument("files", nargs="*", metavar="FILE", help="replay these instead of the sample")
    demo.add_argument("--bootstrap", metavar="HOST:PORT[,...]", help="use this cluster")
    demo.add_argument(
        "--idle", type=float, default=3.0, metavar="S", help="quiet seconds before exit (3)"
    )
    demo.add_argument(
        "--timeout", type=float, default=300.0, metavar="S", help="give up after (300)"
    )
    demo.add_argument("--follow", action="store_true", help="keep printing alerts until Ctrl-C")
    demo.add_argument("--json", action="store_true", help="print alerts as JSON lines")
    format_flag(demo)
    _severity_flag(demo)
    demo.set_defaults(func=_demo)
    up = subparsers.add_parser("up", help="embedded broker + worker, printing alerts until Ctrl-C")
    up.add_argument("--bootstrap", metavar="HOST:PORT[,...]", help="use this cluster")
    up.add_argument("--json", action="store_true", help="print alerts as JSON lines")
    format_flag(up)
    _severity_flag(up)
    up.set_defaults(func=_up, files=[], follow=True, idle=0.0, timeout=0.0)


def format_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--format NAME`` (an alert format of `pipeline.sinks.formats.FORMATS`)."""
    parser.add_argument(
        "--format",
        metavar="NAME",
        help="print alerts as JSON lines in this format: native, ocsf, ecs, splunk_hec"
        " (implies --json)",
    )


def alert_renderer(args: argparse.Namespace) -> Callable[[dict[str, Any]], str | None] | None:
    """How to print one alert: a table row, a native JSON line (``--json``), or a JSON line in
    the ``--format`` (which sets ``args.json``); the function returns None for an alert the
    format cannot write (reported on stderr). None when the format is unknown (reported; the
    caller exits 2)."""
    if not getattr(args, "format", None):
        return (lambda a: json.dumps(a)) if args.json else format_row
    from pipeline.sinks.formats import FORMATS

    fmt = FORMATS.get(args.format)
    if fmt is None:
        print(
            f"klaxon: unknown format {args.format!r} (one of {', '.join(FORMATS)})", file=sys.stderr
        )
        return None
    args.json = True

    def render(alert: dict[str, Any]) -> str | None:
        try:
            return fmt.encode(alert).decode()
        except (ValueError, TypeError) as exc:
            print(
                f"klaxon: alert {alert.get('id')} cannot be written as {fmt.name}: {exc}",
                file=sys.stderr,
            )
            return None

    return render


def _severity_flag(parser: argparse.ArgumentParser) -> None:
    from schemas.alert import SEVERITIES

    parser.add_argument(
        "--min-severity",
        choices=SEVERITIES,
        default="low",
        help="print alerts of at least this severity (default low; all are counted)",
    )


def _demo(args: argparse.Namespace) -> int:
    if alert_renderer(args) is None:
        return 2
    files = [Path(f) for f in args.files] or sample_files()
    if not files:
        print(
            "klaxon demo: no bundled sample (replay/sample/*.jsonl.gz); pass FILE", file=sys.stderr
        )
        return 2
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        print(f"klaxon demo: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    return _run(args, files)


def _up(args: argparse.Namespace) -> int:
    if alert_renderer(args) is None:
        return 2
    return _run(args, [])


@contextlib.contextmanager
def _broker(settings: Settings, bootstrap: str | None) -> Iterator[str]:
    """Yield bootstrap servers: the given cluster, else a fresh embedded Tansu."""
    if bootstrap:
        yield bootstrap
        return
    from pipeline.brokers import TansuBroker

    with TansuBroker() as tansu:
        yield tansu.bootstrap_servers


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM this child when its parent dies (no orphaned workers)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class _Worker:
    """A ``klaxon worker`` subprocess with its log and status files in ``workdir``."""

    def __init__(self, bootstrap: str, env: dict[str, str], workdir: Path) -> None:
        self.status = workdir / "status.json"
        self.log_path = workdir / "worker.log"
        argv = [sys.executable, "-m", "klaxon", "worker", "--bootstrap", bootstrap]
        argv += ["--status-file", str(self.status), "--health-interval", "1"]
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_set_pdeathsig if sys.platform == "linux" else None,
        )

    def snapshot(self) -> dict[str, Any] | None:
        return read_status(self.status)

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (the worker commits and leaves its group), SIGKILL after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def kill(self) -> None:
        """SIGKILL if still running (never leaves an orphan)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _interrupt_on_signals() -> None:
    """SIGINT and SIGTERM both unwind through our cleanup (Python's default SIGTERM would
    exit at once and leave the broker running; a background job may inherit SIGINT ignored)."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)


def _run(args: argparse.Namespace, files: Sequence[Path]) -> int:
    try:
        settings = Settings.from_env()
    except PipelineError as exc:
        print(f"klaxon: {exc}", file=sys.stderr)
        return 2
    given = args.bootstrap or settings.bootstrap_servers
    _interrupt_on_signals()
    workdir = Path(tempfile.mkdtemp(prefix="klaxon-demo-"))
    worker: _Worker | None = None
    try:
        with _broker(settings, given) as bootstrap:
            settings = settings.replace(bootstrap_servers=bootstrap)
            if not given:  # the embedded broker: plaintext on 127.0.0.1, whatever KAFKA_SSL_*
                settings = settings.replace(
                    data_dir=workdir / "data", kafka_security=KafkaSecurity()
                )
            where = "embedded Tansu" if not given else "cluster"
            print(f"klaxon: {where} at {bootstrap}", file=sys.stderr)
            from pipeline.topics import ensure_topics
            from pipeline.worker import settings_env

            if not os.environ.get("KLAXON_METRICS_ADDRESS"):  # a free port: demos never collide
                settings = settings.replace(metrics_address="127.0.0.1:0")
            env = {**os.environ, **settings_env(settings)}

            asyncio.run(ensure_topics(bootstrap, settings))
            worker = _Worker(bootstrap, env, workdir)
            try:
                return asyncio.run(_watch(args, settings, files, worker))
            finally:
                worker.stop()  # while the broker is still up: a clean leave takes ~1 s
    except KeyboardInterrupt:
        print("\nklaxon: stopping", file=sys.stderr)
        return 130
    except PipelineError as exc:
        print(f"klaxon: {exc}", file=sys.stderr)
        return 1
    finally:
        if worker is not None:
            worker.kill()  # only if a second Ctrl-C interrupted the clean stop
        shutil.rmtree(workdir, ignore_errors=True)


async def _watch(
    args: argparse.Namespace, settings: Settings, files: Sequence[Path], worker: _Worker
) -> int:
    """Replay ``files``, print alerts; return when done (see module docstring)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from replay.producer import replay_files

    assert settings.bootstrap_servers is not None
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="latest",
        **settings.kafka_security.client_kwargs(),
    )
    await consumer.start()
    try:
        tps = [TopicPartition(settings.topic_alerts, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)  # pin "latest" now, before anything is replayed
        sent = 0
        if files:
            stats = await replay_files(
                files,
                bootstrap=settings.bootstrap_servers,
                topic=settings.topic_raw,
                client_options=settings.kafka_security.client_kwargs(),
            )
            sent = stats.messages
            print(
                f"klaxon: replayed {stats.events} events in {stats.messages} messages;"
                " waiting for the worker (first start takes a few seconds)",
                file=sys.stderr,
            )
        else:
            print(
                f"klaxon: worker running; replay into it with:\n"
                f"  KAFKA_BOOTSTRAP_SERVERS={settings.bootstrap_servers} klaxon replay FILE",
                file=sys.stderr,
            )
        if not args.json:
            print(header_row(), flush=True)
        return await _print_alerts(args, consumer, worker, sent)
    finally:
        await consumer.stop()


async def _print_alerts(args: argparse.Namespace, consumer: Any, worker: _Worker, sent: int) -> int:
    from schemas.alert import SEVERITIES

    shown = set(SEVERITIES[SEVERITIES.index(args.min_severity) :])
    render = alert_renderer(args) or format_row  # checked by _demo / _up
    started = last_alert = time.monotonic()
    alerts = 0
    while True:
        batch = await consumer.getmany(timeout_ms=500)
        for records in batch.values():
            for record in records:
                alerts += 1
                last_alert = time.monotonic()
                try:
                    alert = json.loads(record.value)
                except ValueError:
                    continue
                line = render(alert) if alert.get("severity") in shown else None
                if line is not None:
                    print(line, flush=True)
        if worker.proc.poll() is not None:
            raise WorkerError(f"worker exited with code {worker.proc.returncode}:\n{worker.tail()}")
        if args.follow:
            continue
        now = time.monotonic()
        snap = worker.snapshot()
        if _caught_up(snap, sent) and now - last_alert >= args.idle:
            _summary(snap or {}, alerts, now - started, args.min_severity)
            return 0
        if args.timeout and now - started > args.timeout:
            print(f"klaxon: gave up after {args.timeout:g}s; worker log:", file=sys.stderr)
            print(worker.tail(), file=sys.stderr)
            return 1


def _caught_up(snapshot: dict[str, Any] | None, sent: int) -> bool:
    """Whether the worker processed all ``sent`` raw messages and all events it produced."""
    if not snapshot:
        return False
    c = snapshot.get("counters", {})
    return bool(
        c.get("raw_messages", 0) >= sent
        and c.get("events_messages_in", 0) >= c.get("events_messages_out", 0)
        and snapshot.get("lag_total", 1) == 0
    )


def _summary(snapshot: dict[str, Any], alerts: int, seconds: float, floor: str) -> None:
    c = snapshot.get("counters", {})
    filtered = sum((c.get("filtered") or {}).values())
    print(
        f"\n{alerts} alerts from {c.get('events_in', 0)} events"
        f" ({c.get('normalised', 0)} normalised, {filtered} filtered,"
        f" {c.get('dead_lettered', 0)} dead-lettered) in {seconds:.1f}s;"
        f" shown: severity {floor} and above",
        file=sys.stderr,
    )
