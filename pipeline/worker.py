"""Run one Klaxon worker process: ensure topics, load rules, start the Faust app.

Several processes with the same ``KLAXON_APP_ID`` form one consumer group and share the
partitions. Start-up fails fast (exit 1, every problem printed) when the broker is not
reachable, the topics have another layout, or the rules do not load; afterwards, broken
rule edits are logged and the running engine is kept (`pipeline.reload`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from pipeline import kafka_compat
from pipeline.agents import Runtime, install_agents, unready_reasons
from pipeline.app import KlaxonApp, WorkerOptions, create_app
from pipeline.config import Settings, parse_address, stateful_env
from pipeline.errors import PipelineError, WorkerError
from pipeline.handoff import Handoff
from pipeline.reload import EngineHolder, RuleWatcher, engine_builder, fingerprint, watched_paths

__all__ = [
    "GC_GEN0_THRESHOLD",
    "MALLOC_KEEP",
    "configure_logging",
    "new_event_loop",
    "preload",
    "prepare",
    "run_worker",
    "serve_telemetry",
    "settings_env",
    "tune_gc",
    "tune_malloc",
]


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment variables that reproduce ``settings`` in a child process (e.g. a
    worker started by ``klaxon demo`` or a test); inverse of `Settings.from_env`.

    >>> env = settings_env(Settings(bootstrap_servers="k:9092", partitions=8))
    >>> Settings.from_env(env) == Settings(bootstrap_servers="k:9092", partitions=8)
    True
    """
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers or "",
        "KLAXON_TOPIC_RAW": settings.topic_raw,
        "KLAXON_TOPIC_EVENTS": settings.topic_events,
        "KLAXON_TOPIC_ALERTS": settings.topic_alerts,
        "KLAXON_TOPIC_DEADLETTER": settings.topic_deadletter,
        "KLAXON_PARTITIONS": str(settings.partitions),
        "KLAXON_REPLICATION_FACTOR": str(settings.replication_factor),
        "KLAXON_RAW_RETENTION_MS": str(settings.raw_retention_ms),
        "KLAXON_ALERTS_RETENTION_MS": str(settings.alerts_retention_ms),
        "KLAXON_RULES": os.pathsep.join(str(p) for p in settings.rules_paths),
        "KLAXON_LISTS": os.pathsep.join(str(p) for p in settings.lists_paths),
        "KLAXON_CLUSTER": settings.cluster,
        "KLAXON_APP_ID": settings.app_id,
        "KLAXON_DATA_DIR": str(settings.data_dir),
        "KLAXON_METRICS_ADDRESS": settings.metrics_address,
        "KLAXON_METRICS_TOKEN": settings.metrics_bearer or "",
        "KLAXON_LABELS": ",".join(f"{k}={v}" for k, v in settings.labels),
        "KLAXON_RULES_ENABLE": ",".join(settings.rules_enable),
        "KLAXON_RULES_DISABLE": ",".join(settings.rules_disable),
        "KLAXON_REDACT_PATTERNS": "\n".join(settings.redact_patterns),
        **stateful_env(settings),
        **settings.kafka_security.env(),  # secrets read from a *_FILE are passed as the file
    }
    return env


def configure_logging(level: int = logging.INFO) -> None:
    """Klaxon's own log lines to stderr: health lines as bare JSON, the rest with a prefix.

    Faust's logging (``--loglevel``) is configured separately by the Faust worker.
    """
    plain = logging.getLogger("klaxon.health")
    if not plain.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        plain.addHandler(handler)
        plain.propagate = False
    plain.setLevel(level)
    root = logging.getLogger("klaxon")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.propagate = False
    root.setLevel(level)


def prepare(settings: Settings, bootstrap: str) -> Runtime:
    """Create or check the topics and build the first engine; raises `PipelineError`."""
    from detections import RuleLoadError
    from detections.alert import alert_builder
    from pipeline.topics import ensure_topics, stateful_topic_specs

    extra = stateful_topic_specs(settings)  # state changelog, by-group topic
    asyncio.run(ensure_topics(bootstrap, settings, extra=extra))
    rules, lists = list(settings.rules_paths), list(settings.lists_paths)
    seen = fingerprint(watched_paths(rules, lists))  # before loading: a change during load counts
    builder = engine_builder(settings.rule_selection())
    try:
        engine, count = builder(rules, lists)
    except RuleLoadError as exc:
        raise WorkerError(str(exc)) from exc
    except Exception as exc:  # an engine bug: say so instead of a bare traceback
        raise WorkerError(f"cannot build the detection engine: {exc!r}") from exc
    holder = EngineHolder(engine, count)
    options = WorkerOptions()
    runtime = Runtime(
        settings=settings,
        options=options,
        holder=holder,
        events_partitions=settings.partitions,  # ensure_topics refuses any other count
        to_alert=alert_builder(settings.label_map),
    )
    runtime.watcher = RuleWatcher(
        holder, rules, lists, builder=builder, on_result=_count_reloads(runtime), seen=seen
    )
    return runtime


def _count_reloads(rt: Runtime) -> Callable[[bool], None]:
    def on_result(ok: bool) -> None:
        if ok:
            rt.counters.engine_reloads += 1
        else:
            rt.counters.reload_failures += 1

    return on_result


#: Net allocations of container objects (allocated minus freed) that start a young-generation
#: collection (CPython: 700). Above what the worker's buffers hold at their fullest (the
#: handoff's 20,000 events are ~800,000 containers): `tune_gc` says why.
GC_GEN0_THRESHOLD = 1_000_000


def tune_gc(gen0: int = GC_GEN0_THRESHOLD) -> tuple[int, int, int]:
    """Make the cyclic garbage collector cheap for a worker; returns the previous thresholds.

    Parsing audit events allocates ~40 dicts and lists per event, so CPython's default
    threshold (a young collection every 700 allocations, an older one every 10 of those)
    ran the collector every few events over a heap of buffered batches: measured 6 µs of
    a 15 µs normalise per event. Everything alive at start (imports, the compiled rules)
    is frozen out of collections, and young collections run every ``gen0`` allocations;
    events are freed by reference counting as usual, only cyclic garbage waits longer.

    The count is net of what is freed, so in a steady worker it moves with what its buffers
    hold (stream buffers, joined events messages, the handoff), and a collection walks every
    young container still alive: at 50,000 it ran when those buffers grew, over hundreds of
    thousands of buffered events' containers (7 collections in 141,000 events, up to 39 ms
    each: 1.1 µs/event in ``bench pipeline --events 150000``). At 1,000,000 none ran there;
    collections come with lasting growth (stateful state). The worker makes little cyclic
    garbage (2,000-4,000 objects found in a whole bench run), so waiting longer costs no
    memory to speak of.

    >>> import gc
    >>> old = tune_gc(); gc.get_threshold()[0]
    1000000
    >>> gc.unfreeze(); gc.set_threshold(*old)
    """
    import gc

    old = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(gen0, old[1], old[2])
    return old


#: Free memory each malloc arena keeps for reuse instead of returning it to the system, and
#: the size from which a block gets its own mapping (glibc: 128 KiB at start, then adaptive).
MALLOC_KEEP = 16 * 1024 * 1024


def tune_malloc(keep: int = MALLOC_KEEP, env: Mapping[str, str] = os.environ) -> bool:
    """Have glibc's malloc keep up to ``keep`` bytes of freed memory per arena for reuse;
    returns whether the C library took the settings (False elsewhere than glibc, and when
    the operator set glibc's own ``MALLOC_TRIM_THRESHOLD_``/``MALLOC_MMAP_THRESHOLD_``).

    The Kafka consumer thread reads fetch responses of up to 1 MB per partition into a
    growing buffer and copies each message out of it; the normalise agent's events messages
    are hundreds of KB. With glibc's defaults much of that memory was handed back and
    faulted in again on every fetch: 0.3-0.45 page faults per event in the consumer thread.
    Keeping 16 MB cut them to 0.03-0.17 and the consumer thread's CPU by 0.4-1.4 µs/event,
    with the same peak RSS in ``bench pipeline`` (docs/operations.md, "Sizing"). With
    100,000 principals of state over a 600 s soak it held 40-55 MB more RSS (337-342 against
    283-295 MB): ``MALLOC_TRIM_THRESHOLD_=131072`` turns it off where memory matters more.

    >>> tune_malloc(env={"MALLOC_TRIM_THRESHOLD_": "131072"})
    False
    """
    import ctypes

    if any(name in env for name in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")):
        return False  # the operator's choice
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no C library symbols to reach (not Linux)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    # Both: setting either turns glibc's adaptive mmap threshold off.
    return bool(mallopt(m_mmap_threshold, keep)) and bool(mallopt(m_trim_threshold, keep))


def serve_telemetry(app: KlaxonApp, rt: Runtime, loop: asyncio.AbstractEventLoop) -> None:
    """Start /metrics, /healthz, /readyz on ``loop`` (the one Faust will run) unless the
    address is ``off``; raises `OSError` when the address cannot be bound."""
    address = parse_address(rt.settings.metrics_address)
    if address is None:
        return
    from pipeline.telemetry import TelemetryServer, WorkerMetrics

    rt.metrics = WorkerMetrics(rt)
    server = TelemetryServer(
        rt.metrics.registry,
        address,
        token=rt.settings.metrics_bearer,
        unready=lambda: unready_reasons(app, rt),
    )
    loop.run_until_complete(server.start())
    rt.metrics_url = server.url
    logging.getLogger("klaxon.worker").info("metrics, health: %s/metrics", server.url)


def preload(settings: Settings) -> threading.Thread | None:
    """Import what the first message will need but start-up does not (river's
    HalfSpaceTrees, for the online anomaly model: `detections.stateful.river_hst.hst_class`)
    in a background thread, while the main thread mostly waits on the broker (topics, group
    join, table recovery). The loader is locked: a first message that comes sooner waits for
    it, nothing more.

    >>> preload(Settings(stateful_detectors=("silence",))) is None
    True
    """
    if "anomaly" not in settings.stateful_detectors:
        return None
    from detections.stateful.river_hst import hst_class

    thread = threading.Thread(target=hst_class, name="klaxon-preload", daemon=True)
    thread.start()
    return thread


def new_event_loop(kind: str = "uvloop") -> asyncio.AbstractEventLoop:
    """A new event loop of ``kind`` (``uvloop`` or ``asyncio``), set as the process's loop
    policy too, so the loop Faust's Kafka consumer thread makes is of the same kind.

    uvloop runs the loop itself (handles, timers, socket readiness and transports) in C: per
    Kafka message Faust and aiokafka schedule a dozen callbacks and tasks on two loops, and
    ``bench pipeline`` measured 1.4-3.8 µs/event less CPU on uvloop, same code, in 3
    alternated pairs (docs/operations.md, "Sizing"). Without uvloop installed this is
    asyncio's loop, said once in the log. On uvloop, aiokafka needs `pipeline.kafka_compat`
    (a write on a connection the broker closed raises where asyncio's loop does not), installed
    here.

    >>> loop = new_event_loop("asyncio"); type(loop).__module__; loop.close()
    'asyncio.unix_events'
    """
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            logging.getLogger("klaxon.worker").warning(
                "uvloop is not installed: running on asyncio's event loop"
            )
        else:
            kafka_compat.install()
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            return asyncio.new_event_loop()
    asyncio.set_event_loop_policy(None)
    return asyncio.new_event_loop()


def run_worker(settings: Settings, options: WorkerOptions, *, bootstrap: str) -> int:
    """Run a worker until SIGINT/SIGTERM; returns the exit code (1 after a crash)."""
    import faust

    preload(settings)
    configure_logging()
    log = logging.getLogger("klaxon.worker")
    try:
        runtime = prepare(settings, bootstrap)
    except PipelineError as exc:
        print(f"klaxon worker: {exc}", file=sys.stderr)
        return 1
    runtime.options = options
    runtime.handoff = Handoff(options.handoff_events)
    try:
        (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
        if options.status_file:
            Path(options.status_file).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"klaxon worker: cannot create {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    loop = new_event_loop(options.event_loop)
    asyncio.set_event_loop(loop)  # prepare()'s asyncio.run closed its loop
    app = create_app(settings, options, bootstrap=bootstrap)
    try:
        serve_telemetry(app, runtime, loop)
    except OSError as exc:
        print(
            f"klaxon worker: cannot serve metrics on {settings.metrics_address}: {exc}",
            file=sys.stderr,
        )
        return 1
    install_agents(app, runtime)
    tune_gc()
    tune_malloc()
    from schemas.native import in_use

    log.info(
        "worker starting: bootstrap=%s security=%s group=%s rules=%d partitions=%d raw=%s"
        " loop=%s compiled=%s",
        bootstrap,
        settings.kafka_security.describe(),
        settings.app_id,
        runtime.holder.rules,
        runtime.events_partitions,
        settings.topic_raw,
        type(loop).__module__.split(".")[0],
        "yes" if in_use() else "no (sources)",
    )
    worker = faust.Worker(app, loglevel=options.loglevel, quiet=True, redirect_stdouts=False)
    worker.spinner = None  # Faust draws a terminal spinner on stdout even when quiet
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        return code
    except Exception:  # mode re-raises the crash reason after shutting down
        log.exception("worker crashed")
        return 1
    return 0
