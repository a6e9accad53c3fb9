"""Brokers started by Klaxon never outlive the process that started them (Linux)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline.brokers import TansuBroker

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG")

REPO = Path(__file__).resolve().parents[2]

PARENT = """
import time
from pipeline.brokers import TansuBroker
broker = TansuBroker().start()
print(broker.pids[0], flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for init to reap it counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_sigkilled_parent_takes_its_tansu_broker_with_it() -> None:
    """SIGKILL of the process holding a TansuBroker makes the kernel kill the broker too."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, env=env, cwd=REPO
    )
    broker_pid = None
    try:
        assert parent.stdout is not None
        ready, _, _ = select.select([parent.stdout], [], [], 60)
        assert ready, "the parent did not start its broker within 60 s"
        broker_pid = int(parent.stdout.readline())
        assert _alive(broker_pid)
        parent.kill()
        parent.wait(10)
        assert _wait_dead(broker_pid, 10), "the broker outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if broker_pid is not None and _alive(broker_pid):
            os.kill(broker_pid, 9)


def test_a_broker_started_from_a_short_lived_thread_outlives_that_thread() -> None:
    """The death signal follows the starting process, not the thread that happened to fork."""
    started: list[TansuBroker] = []
    thread = threading.Thread(target=lambda: started.append(TansuBroker().start()))
    thread.start()
    thread.join(60)
    assert started, "the broker did not start"
    broker = started[0]
    try:
        time.sleep(0.5)  # the kernel signals at once when the forking thread ends
        assert broker.running
        assert all(_alive(pid) for pid in broker.pids)
    finally:
        broker.stop()
