"""``klaxon worker --processes N``: several worker processes on one host, one per core.

A worker is one Python process and so uses one core for its work (the GIL); a host's
throughput grows with processes, not threads. The parent starts N children, each the same
``klaxon worker`` command with ``--processes 1``, in the same consumer group (so they share
the partitions: keep partitions >= processes on every input topic), and gives each child
what must not be shared: its own metrics port (the configured one + i), status file
(``NAME-i.EXT``) and Faust data directory (``$KLAXON_DATA_DIR/process-i``). It forwards
SIGTERM and SIGINT to them and, when one exits, stops the others and exits with the first
non-zero code (0 if every child stopped cleanly): the process manager (Kubernetes, systemd,
compose) then restarts the set, as it restarts a single worker.

>>> flags, env = child_setup(2, metrics_address="0.0.0.0:9464",
...                          status_file="/run/k/status.json", data_dir="/var/lib/klaxon")
>>> flags
['--processes', '1', '--metrics-address', '0.0.0.0:9466', '--status-file', '/run/k/status-2.json']
>>> env
{'KLAXON_DATA_DIR': '/var/lib/klaxon/process-2'}
>>> child_setup(0, metrics_address="off", status_file=None, data_dir="d")[0]
['--processes', '1', '--metrics-address', 'off']
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

__all__ = ["child_setup", "exit_code", "process_count", "supervise"]


def process_count(requested: int) -> int:
    """How many processes ``--processes`` means: ``requested``, or with 0 one per core this
    process may run on (its CPU affinity, which containers and ``taskset`` narrow).

    >>> process_count(3)
    3
    >>> process_count(0) >= 1
    True
    """
    if requested > 0:
        return requested
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def child_setup(
    index: int, *, metrics_address: str, status_file: str | None, data_dir: str
) -> tuple[list[str], dict[str, str]]:
    """The extra flags and environment of child ``index`` (see the module docstring).

    A metrics port of 0 (any free port) and ``off`` are passed on unchanged.
    """
    flags = ["--processes", "1"]
    host, sep, port = metrics_address.rpartition(":")
    if sep and port.isdigit() and int(port) != 0:
        flags += ["--metrics-address", f"{host}:{int(port) + index}"]
    else:
        flags += ["--metrics-address", metrics_address]
    if status_file:
        path = Path(status_file)
        flags += ["--status-file", str(path.with_name(f"{path.stem}-{index}{path.suffix}"))]
    return flags, {"KLAXON_DATA_DIR": str(Path(data_dir) / f"process-{index}")}


def exit_code(codes: Sequence[int], *, stopping: bool) -> int:
    """The parent's exit code from the children that had exited on their own (``codes``):
    the first failure (a signal ``-n`` as ``128 + n``), 0 if none failed; when the parent was
    asked to stop, children stopped by that signal count as clean.

    >>> exit_code([0, 1], stopping=False), exit_code([-9], stopping=False)
    (1, 137)
    >>> exit_code([-15, 0], stopping=True), exit_code([], stopping=False)
    (0, 0)
    """
    stop_signals = (-signal.SIGTERM, -signal.SIGINT) if stopping else ()
    for code in codes:
        if code != 0 and code not in stop_signals:
            return 128 - code if code < 0 else code
    return 0


def supervise(
    command: Sequence[str],
    count: int,
    *,
    metrics_address: str,
    status_file: str | None,
    data_dir: str,
    poll: float = 0.2,
    program: Sequence[str] = (sys.executable, "-m", "klaxon"),
) -> int:
    """Run ``count`` children ``program + command + their flags`` (``command``: the
    ``klaxon`` arguments, ``worker ...``) until one exits; returns the exit code (see the
    module docstring)."""
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for i in range(count):
            flags, env = child_setup(
                i, metrics_address=metrics_address, status_file=status_file, data_dir=data_dir
            )
            argv = [*program, *command, *flags]
            children.append(subprocess.Popen(argv, env={**os.environ, **env}))
        print(
            f"klaxon worker: {count} processes (pids {', '.join(str(c.pid) for c in children)})",
            file=sys.stderr,
        )
        while all(child.poll() is None for child in children):
            time.sleep(poll)
        first = [c.returncode for c in children if c.returncode is not None]
        if not stopping:
            print("klaxon worker: a process exited; stopping the others", file=sys.stderr)
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        return exit_code(first, stopping=stopping)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
