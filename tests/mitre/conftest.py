"""A headless-chromium fixture for the HTML heatmap tests.

Talks the Chrome DevTools Protocol over `--remote-debugging-pipe` (fds 3 and 4, NUL-separated
JSON), so it needs nothing beyond the standard library and a chromium binary. It opens one
page, collects console errors, uncaught exceptions and browser log errors (CSP violations,
failed loads), evaluates expressions, and takes a full-page PNG screenshot.

Without chromium the `browser` tests skip locally and fail in CI (`CI=true`): Debian's
`apt-get install -y chromium`.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
)


def find_chromium() -> str | None:
    """Path of a chromium binary: `$KLAXON_CHROMIUM`, else the first one on PATH."""
    override = os.environ.get("KLAXON_CHROMIUM")
    if override:
        return override
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageReport:
    """What one page load produced."""

    errors: list[str] = field(default_factory=list)  # console errors, exceptions, log errors
    values: dict[str, Any] = field(default_factory=dict)  # expression -> evaluated value
    png: bytes = b""


class _Pipe:
    """Minimal CDP client over the two pipes; events are buffered for later inspection."""

    def __init__(self, write_fd: int, read_fd: int, deadline: float) -> None:
        self.write_fd, self.read_fd, self.deadline = write_fd, read_fd, deadline
        self.buffer = b""
        self.events: list[dict[str, Any]] = []
        self.next_id = 0

    def _read_message(self) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer in time")
            ready, _, _ = select.select([self.read_fd], [], [], left)
            if ready:
                chunk = os.read(self.read_fd, 1 << 20)
                if not chunk:
                    raise ConnectionError("chromium closed the debugging pipe")
                self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self.write_fd, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read_message()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self.events.append(reply)

    def wait_for(self, method: str) -> None:
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._read_message())

    def drain(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([self.read_fd], [], [], max(end - time.monotonic(), 0))
            if ready:
                chunk = os.read(self.read_fd, 1 << 20)
                if not chunk:
                    return
                self.buffer += chunk
            while b"\0" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\0", 1)
                self.events.append(json.loads(raw))


def _errors(events: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            texts = [str(a.get("value", a.get("description", ""))) for a in params.get("args", [])]
            out.append("console: " + " ".join(texts))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            desc = details.get("exception", {}).get("description") or details.get("text")
            out.append(f"exception: {desc}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            out.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}")
    return out


def load_page(
    binary: str, page: Path, expressions: tuple[str, ...] = (), width: int = 1600
) -> PageReport:
    """Open `page` in headless chromium; report errors, evaluated expressions and a screenshot."""
    cmd_r, cmd_w = os.pipe()  # we write commands, chromium reads fd 3
    out_r, out_w = os.pipe()  # chromium writes fd 4, we read

    def wire_fds() -> None:
        # Move both ends above 3/4 first so neither dup2 clobbers the other; dup2 onto the
        # same number would keep the close-on-exec flag that os.pipe() sets.
        high_r = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10)
        high_w = fcntl.fcntl(out_w, fcntl.F_DUPFD, 10)
        os.dup2(high_r, 3)
        os.dup2(high_w, 4)

    with tempfile.TemporaryDirectory(prefix="klaxon-chromium-") as profile:
        proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,
            preexec_fn=wire_fds,  # the test process does not run threads here
        )
        os.close(cmd_r)
        os.close(out_w)
        report = PageReport()
        try:
            cdp = _Pipe(cmd_w, out_r, time.monotonic() + 60)
            target = cdp.call("Target.createTarget", url="about:blank")["targetId"]
            session = cdp.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Runtime", "Log", "Page"):
                cdp.call(f"{domain}.enable", session)
            cdp.call(
                "Emulation.setDeviceMetricsOverride",
                session,
                width=width,
                height=900,
                deviceScaleFactor=1,
                mobile=False,
            )
            cdp.call("Page.navigate", session, url=page.resolve().as_uri())
            cdp.wait_for("Page.loadEventFired")
            cdp.drain(0.3)  # late console messages and CSP reports
            for expr in expressions:
                result = cdp.call("Runtime.evaluate", session, expression=expr, returnByValue=True)
                report.values[expr] = result.get("result", {}).get("value")
            size = cdp.call("Page.getLayoutMetrics", session)["cssContentSize"]
            cdp.call(
                "Emulation.setDeviceMetricsOverride",
                session,
                width=width,
                height=min(int(size["height"]) + 1, 6000),
                deviceScaleFactor=1,
                mobile=False,
            )
            shot = cdp.call("Page.captureScreenshot", session, format="png")
            report.png = base64.b64decode(shot["data"])
            report.errors = _errors(cdp.events)
            with contextlib.suppress(ConnectionError, RuntimeError, TimeoutError):
                cdp.call("Browser.close")
        finally:
            os.close(cmd_w)
            os.close(out_r)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return report


@pytest.fixture(scope="session")
def chromium() -> Iterator[Callable[..., PageReport]]:
    """`load(page, expressions=()) -> PageReport`; skips without chromium unless CI=true."""
    binary = find_chromium()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required in CI (apt-get install -y chromium)")
        pytest.skip("chromium not installed (apt-get install -y chromium)")

    def load(page: Path, expressions: tuple[str, ...] = (), width: int = 1600) -> PageReport:
        return load_page(binary, page, expressions, width)

    yield load
