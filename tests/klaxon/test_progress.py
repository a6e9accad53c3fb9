"""`klaxon.progress` and how `klaxon replay` reports reading: a bar on a terminal, plain
periodic lines otherwise, always on stderr."""

from __future__ import annotations

import io
import os

from klaxon.progress import Progress
from klaxon.replay_cli import read_files
from replay.sample import SAMPLE_PATH


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_terminal_gets_one_line_redrawn_with_bar_rate_and_eta() -> None:
    out, clock = io.StringIO(), Clock()
    p = Progress(1000, stream=out, tty=True, clock=clock)
    clock.now = 2.0
    p.update(400, 500)
    assert out.getvalue() == (
        "\r\x1b[2K[############............]  400 events  50%  200 events/s  ETA 0:02"
    )
    p.update(401, 501)  # within 0.1 s: not redrawn
    assert out.getvalue().count("\r") == 1
    p.done()
    assert out.getvalue().endswith("\r\x1b[2K")


def test_a_pipe_gets_a_plain_line_every_few_seconds() -> None:
    out, clock = io.StringIO(), Clock()
    p = Progress(None, stream=out, tty=False, every=5.0, clock=clock)
    for second in range(1, 12):
        clock.now = float(second)
        p.update(second * 100)
    assert out.getvalue().splitlines() == ["500 events  100 events/s", "1,000 events  100 events/s"]
    p.done()
    assert "\r" not in out.getvalue()


def test_read_files_reports_every_event_and_reaches_the_stored_size() -> None:
    out, clock = io.StringIO(), Clock()
    size = os.path.getsize(SAMPLE_PATH)
    p = Progress(2 * size, stream=out, tty=False, every=0.0, clock=clock)
    events = list(read_files([SAMPLE_PATH, SAMPLE_PATH], p))
    assert p.events == len(events) == 2 * 4611
    assert p.bytes == 2 * size
