"""`pipeline.supervise`: ``klaxon worker --processes N`` runs N children, each with its own
metrics port, status file and data directory, and stops them all when one fails or when it
is told to stop."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from pipeline.supervise import process_count, supervise

# A stand-in worker: records its arguments and data dir, then fails if asked to or runs
# until a signal stops it (exit 0 on SIGTERM, as the worker does).
CHILD = r"""
import json, os, signal, sys, time
args = sys.argv[1:]
out, rest = args[0], args[1:]
status = rest[rest.index("--status-file") + 1] if "--status-file" in rest else ""
index = status.rsplit("-", 1)[-1].split(".")[0]
with open(f"{out}/child-{index}.json", "w") as fh:
    json.dump({"args": rest, "data_dir": os.environ["KLAXON_DATA_DIR"], "pid": os.getpid()}, fh)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
if f"fail-{index}" in rest:
    time.sleep(0.5)
    sys.exit(3)
while True:
    time.sleep(0.05)
"""


def run(tmp_path: Path, count: int, *extra: str) -> int:
    return supervise(
        [str(tmp_path), "worker", *extra],
        count,
        metrics_address="127.0.0.1:9500",
        status_file=str(tmp_path / "status.json"),
        data_dir=str(tmp_path / "data"),
        poll=0.05,
        program=(sys.executable, "-c", CHILD),
    )


def children(tmp_path: Path, count: int) -> list[dict[str, object]]:
    deadline = time.time() + 20
    while time.time() < deadline:
        files = [tmp_path / f"child-{i}.json" for i in range(count)]
        if all(f.exists() for f in files):
            return [json.loads(f.read_text()) for f in files]
        time.sleep(0.05)
    raise AssertionError("children did not start")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_each_child_gets_its_own_port_status_file_and_data_dir(tmp_path: Path) -> None:
    timer = threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        assert run(tmp_path, 3) == 0  # stopped by SIGTERM, forwarded: a clean stop
    finally:
        timer.cancel()
    seen = children(tmp_path, 3)
    for i, child in enumerate(seen):
        args = child["args"]
        assert isinstance(args, list)
        assert args[:1] == ["worker"] and args[args.index("--processes") + 1] == "1"
        assert args[args.index("--metrics-address") + 1] == f"127.0.0.1:{9500 + i}"
        assert args[args.index("--status-file") + 1] == str(tmp_path / f"status-{i}.json")
        assert child["data_dir"] == str(tmp_path / "data" / f"process-{i}")
        assert not alive(int(str(child["pid"])))


def test_when_one_child_fails_the_others_are_stopped_and_its_code_returned(
    tmp_path: Path,
) -> None:
    started = time.time()
    assert run(tmp_path, 3, "fail-1") == 3
    assert time.time() - started < 20
    for child in children(tmp_path, 3):
        assert not alive(int(str(child["pid"])))


def test_zero_processes_means_one_per_usable_core() -> None:
    assert process_count(0) == len(os.sched_getaffinity(0))
    assert process_count(5) == 5
