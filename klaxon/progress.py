"""A progress display for long commands (``klaxon replay``): on stderr, never on stdout.

On a terminal: one line redrawn in place at most ten times a second, a bar of the input's
bytes with the event count, events per second and the estimated time left. Otherwise (a
pipe, a log file, CI): a plain line every ``every`` seconds. Either way `done` ends it.
The estimate divides the bytes left by the recent byte rate (the input's bytes as stored,
so a gzip file's compressed size), as the number of events is not known in advance.

>>> import io
>>> out = io.StringIO()
>>> p = Progress(total=1000, stream=out, tty=False, every=0, clock=iter([0, 1, 2]).__next__)
>>> p.update(events=500, done=250)
>>> print(out.getvalue().strip())
500 events  25%  500 events/s  ETA 0:03
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "format_eta"]

_WIDTH = 24


def format_eta(seconds: float) -> str:
    """``h:mm:ss`` or ``m:ss``.

    >>> format_eta(5), format_eta(3725)
    ('0:05', '1:02:05')
    """
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """``update(events, done)`` as input is read; ``done()`` once at the end.

    ``total``: bytes of input (None or 0: unknown, no bar and no ETA); ``tty``: draw in
    place (default: whether ``stream`` is a terminal); ``every``: seconds between plain lines.
    """

    def __init__(
        self,
        total: int | None,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total or None
        self.stream = stream if stream is not None else sys.stderr
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty = tty
        self.every = 0.1 if tty else every
        self.clock = clock
        self.started = clock()
        self._last = self.started
        self._drawn = False
        self.events = 0
        self.bytes = 0

    def update(self, events: int, done: int | None = None) -> None:
        """``events`` read so far, ``done`` bytes of the input read so far."""
        self.events = events
        if done is not None:
            self.bytes = done
        now = self.clock()
        if now - self._last < self.every:
            return
        self._last = now
        self._draw(now)

    def line(self, now: float) -> str:
        """The progress text at ``now``."""
        elapsed = max(now - self.started, 1e-9)
        rate = self.events / elapsed
        parts = [f"{self.events:,} events"]
        if self.total:
            share = min(self.bytes / self.total, 1.0)
            if self.tty:
                filled = round(share * _WIDTH)
                parts.insert(0, "[" + "#" * filled + "." * (_WIDTH - filled) + "]")
            parts.append(f"{share:.0%}")
        parts.append(f"{rate:,.0f} events/s")
        if self.total and self.bytes:
            left = (self.total - self.bytes) * elapsed / self.bytes
            parts.append(f"ETA {format_eta(left)}")
        return "  ".join(parts)

    def _draw(self, now: float) -> None:
        text = self.line(now)
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
            self._drawn = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """Erase the in-place line (before printing something else on the terminal)."""
        if self.tty and self._drawn:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._drawn = False

    def done(self) -> None:
        """Erase the bar (the caller prints its summary instead)."""
        self.clear()
