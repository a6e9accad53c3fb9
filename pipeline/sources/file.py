"""Follow the API server's audit log file (``--audit-log-path``, JSON lines) as a source.

`FileSource` reads complete lines from the file as it grows, groups them into raw-topic
payloads like replay does (up to ``max_events`` lines and under ``max_bytes``, JSON lines) and
`forward` writes each with a `RawTopicWriter` (``acks=all``). Only once the broker acknowledged
a batch is the checkpoint moved past its lines: a restart neither loses nor repeats a line.

The **checkpoint** (JSON, replaced atomically: temporary file, fsync, rename, fsync of the
folder) names the file by identity, not by path: device, inode and a SHA-256 of its first bytes
(up to ``FINGERPRINT_BYTES``, as many as were read), and the byte offset after the last line
written. At start-up it is looked for, in order, in the followed path (resume at the offset),
then in the rotated files of the same folder (``rotated_globs``): that file is finished first,
then the rotated files written after it (oldest first), then the current file from 0.

Both **rotation** kinds are followed, checked whenever the reader is at the end of its file:

- rename and create (kube-apiserver's lumberjack: ``audit.log`` becomes
  ``audit-<time>.log``, a new ``audit.log`` is created): the old file is read to its end
  through the handle still open, then any rotated file written since, then the new file;
- copytruncate (same inode, cut to 0): the rest of the old content is read from the copy (a
  rotated file whose first bytes match the fingerprint), then the file again from 0.

A last line without its newline is not sent until it is completed; at rotation it is waited
for ``partial_wait`` seconds and then taken as it is. A line over ``max_event_bytes`` becomes a
dead letter (with the reason) in the same write as the batch that follows it; memory stays
bounded by that limit however long the line is.

>>> fp = Fingerprint.of(b'{"auditID":"1"}\\n')
>>> fp.length, fp.matches(b'{"auditID":"1"}\\n{"auditID":"2"}'), fp.matches(b'{"audit')
(16, True, False)
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import logging
import os
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

import orjson

from pipeline.errors import ConfigError, IntakeUnavailable
from pipeline.processing import MAX_MESSAGE_BYTES, Source, dead_letter_bytes
from pipeline.sources.base import PayloadSource, RawPayload

__all__ = [
    "FINGERPRINT_BYTES",
    "Checkpoint",
    "FileConfig",
    "FileSource",
    "Fingerprint",
    "default_rotated_globs",
    "read_checkpoint",
    "write_checkpoint",
]

log = logging.getLogger("klaxon.intake")

#: How many of a file's first bytes identify it (with its device and inode).
FINGERPRINT_BYTES = 1024
_CHUNK = 256 * 1024
#: Dead letters (each up to ``max_event_bytes``) sent with one batch at most.
_MAX_DEAD = 16
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip")


class Writer(Protocol):
    """What `FileSource.forward` needs of a `RawTopicWriter` (tests pass a fake)."""

    async def write(
        self, payloads: Sequence[RawPayload], dead_letters: Sequence[bytes] = ()
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """SHA-256 (hex) of a file's first ``length`` bytes."""

    length: int
    digest: str

    @classmethod
    def of(cls, head: bytes) -> Fingerprint:
        head = head[:FINGERPRINT_BYTES]
        return cls(len(head), hashlib.sha256(head).hexdigest())

    def matches(self, head: bytes) -> bool:
        """Whether ``head`` (a file's first bytes, at least ``length`` of them) matches."""
        return (
            len(head) >= self.length
            and hashlib.sha256(head[: self.length]).hexdigest() == self.digest
        )


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The file (device, inode, fingerprint) and the offset after its last written line."""

    device: int
    inode: int
    fingerprint: Fingerprint
    offset: int
    #: The file's modification time when written (finds the files rotated after it).
    mtime_ns: int = 0
    path: str = ""

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "version": 1,
                "path": self.path,
                "device": self.device,
                "inode": self.inode,
                "fingerprint_bytes": self.fingerprint.length,
                "fingerprint_sha256": self.fingerprint.digest,
                "offset": self.offset,
                "mtime_ns": self.mtime_ns,
            },
            option=orjson.OPT_INDENT_2,
        )


def read_checkpoint(path: Path) -> Checkpoint | None:
    """The checkpoint in ``path``; None if there is none; `ConfigError` naming it if it
    cannot be read or is not a checkpoint."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the checkpoint {path}: {exc}") from None
    try:
        doc = orjson.loads(raw)
        checkpoint = Checkpoint(
            device=int(doc["device"]),
            inode=int(doc["inode"]),
            fingerprint=Fingerprint(int(doc["fingerprint_bytes"]), str(doc["fingerprint_sha256"])),
            offset=int(doc["offset"]),
            mtime_ns=int(doc.get("mtime_ns", 0)),
            path=str(doc.get("path", "")),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(
            f"the checkpoint {path} is not a klaxon file checkpoint ({exc!r});"
            " move it away to start from the beginning of the file"
        ) from None
    if checkpoint.offset < 0 or checkpoint.fingerprint.length < 0:
        raise ConfigError(f"the checkpoint {path} has a negative offset")
    return checkpoint


def write_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Replace ``path`` with ``checkpoint`` atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(checkpoint.to_json())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def default_rotated_globs(path: Path) -> tuple[str, ...]:
    """Where rotated copies of ``path`` are: lumberjack's ``audit-<time>.log`` and
    logrotate's ``audit.log.1`` (compressed files are always skipped).

    >>> default_rotated_globs(Path("/var/log/audit.log"))
    ('audit-*.log', 'audit.log.[0-9]*')
    """
    return (f"{path.stem}-*{path.suffix}", f"{path.name}.[0-9]*")


@dataclass(frozen=True)
class FileConfig:
    """What to follow and how."""

    path: Path
    checkpoint: Path
    cluster: str
    rotated_globs: tuple[str, ...] = ()
    max_events: int = 200
    max_bytes: int = MAX_MESSAGE_BYTES
    max_event_bytes: int = 256 * 1024
    flush_interval: float = 0.5
    poll_interval: float = 0.1
    #: At rotation, how long a last line without newline is waited for before it is sent.
    partial_wait: float = 1.0
    #: Retry delay when the broker did not acknowledge a batch (doubles up to 10 s).
    retry_interval: float = 1.0

    def check(self) -> None:
        if self.max_events < 1:
            raise ConfigError("--batch must be at least 1")
        if not 0 < self.max_event_bytes < self.max_bytes:
            raise ConfigError("--max-event-bytes must be between 1 and the message limit")
        if self.flush_interval <= 0 or self.poll_interval <= 0:
            raise ConfigError("--flush-interval and --poll-interval must be positive")

    def globs(self) -> tuple[str, ...]:
        return self.rotated_globs or default_rotated_globs(self.path)


@dataclass
class _Open:
    """The file being read: its handle, identity and positions."""

    fd: int
    path: Path
    device: int
    inode: int
    #: Offset after the last complete line taken (into a batch or a dead letter).
    line_pos: int
    #: Offset up to which bytes were read (``buffer`` holds ``line_pos..read_pos``).
    read_pos: int
    #: The file's first bytes as read (up to `FINGERPRINT_BYTES`): its identity and the
    #: test for truncation.
    prefix: bytes
    #: The followed path (False: a rotated file, read to its end and left).
    current: bool
    buffer: bytearray = field(default_factory=bytearray)
    #: Bytes dropped of an over-long line being skipped (its head is in ``buffer``), else 0.
    skipping: int = 0
    #: At rotation, the wait for a last line's newline is over.
    waited: bool = False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def unchanged(self) -> bool:
        """The file still starts with the bytes it started with (not truncated)."""
        return not self.prefix or os.pread(self.fd, len(self.prefix), 0) == self.prefix

    def peek(self) -> bytes:
        """What was written since the last read (not taken yet: see `append`)."""
        return os.pread(self.fd, _CHUNK, self.read_pos)

    def append(self, data: bytes) -> None:
        if self.read_pos < FINGERPRINT_BYTES:
            self.prefix += data[: FINGERPRINT_BYTES - self.read_pos]
        self.buffer += data
        self.read_pos += len(data)

    def checkpoint(self) -> Checkpoint:
        """The checkpoint after the last line taken."""
        fingerprint = Fingerprint.of(self.prefix[: self.line_pos])
        try:
            mtime = os.fstat(self.fd).st_mtime_ns
        except OSError:
            mtime = 0
        return Checkpoint(
            self.device, self.inode, fingerprint, self.line_pos, mtime, str(self.path)
        )


def _open(path: Path, offset: int, *, current: bool) -> _Open | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    st = os.fstat(fd)
    prefix = os.pread(fd, min(offset, FINGERPRINT_BYTES), 0)
    return _Open(fd, path, st.st_dev, st.st_ino, offset, offset, prefix, current)


@dataclass
class _Batch:
    lines: list[bytes] = field(default_factory=list)
    size: int = 0
    dead: list[bytes] = field(default_factory=list)
    started: float = 0.0
    end: Checkpoint | None = None

    def __bool__(self) -> bool:
        return bool(self.lines or self.dead)


#: What a read step did: nothing new, lines taken (go on), or the batch must go now.
_IDLE, _MORE, _SEND = "idle", "more", "send"


class FileSource(PayloadSource):
    """Follows ``config.path``. `payloads` yields one `RawPayload` (JSON lines) per batch, or
    a payload of None when a batch is only dead letters (`dead_letters`); `acknowledge`
    commits the checkpoint after it; `forward` writes each with a writer and acknowledges it."""

    name: ClassVar[str] = "file"

    def __init__(self, config: FileConfig) -> None:
        config.check()
        self.config = config
        self.origin_topic = f"file:{config.path}"
        self._file: _Open | None = None
        self._started = False
        self._pending: dict[int, _Batch] = {}
        self._seq = 0
        self._missing_logged = False
        #: Rotated files still to read before the followed path (we were behind).
        self._queue: list[Path] = []
        self.counters: dict[str, int] = {"lines": 0, "batches": 0, "dead_lettered": 0}
        #: The last checkpoint written (or read at start).
        self.committed: Checkpoint | None = None

    # -- PayloadSource -----------------------------------------------------------------

    async def payloads(self) -> AsyncGenerator[RawPayload, None]:
        if not self._started:
            await self._start()
            self._started = True
        batch = _Batch()
        while True:
            state = await self._fill(batch)
            due = batch.started + self.config.flush_interval
            if batch and (state == _SEND or time.monotonic() >= due):
                yield self._seal(batch)
                batch = _Batch()
            elif state == _IDLE:
                wait = self.config.poll_interval
                if batch:
                    wait = max(0.0, min(wait, due - time.monotonic()))
                await asyncio.sleep(wait)

    async def acknowledge(self, payload: RawPayload) -> None:
        batch = self._pending.pop(payload.origin.offset or 0, None)
        if batch is None or batch.end is None:
            return
        self._commit(batch.end)
        self.counters["lines"] += len(batch.lines)
        self.counters["batches"] += 1
        self.counters["dead_lettered"] += len(batch.dead)

    def dead_letters(self, payload: RawPayload) -> list[bytes]:
        """The dead letters to write with ``payload`` (lines over the per-event limit)."""
        batch = self._pending.get(payload.origin.offset or 0)
        return [] if batch is None else list(batch.dead)

    async def forward(self, writer: Writer) -> None:
        """Write every batch, retrying until the broker acknowledges it, and commit the
        checkpoint after it. Runs until cancelled; a write in flight when cancelled is
        finished (and checkpointed if acknowledged) first, so a stop repeats nothing."""
        async with contextlib.aclosing(self.payloads()) as payloads:
            async for payload in payloads:
                await self._deliver_until_acknowledged(writer, payload)

    async def _deliver_until_acknowledged(self, writer: Writer, payload: RawPayload) -> None:
        delay = self.config.retry_interval
        while True:
            attempt = asyncio.ensure_future(self._deliver(writer, payload))
            try:
                delivered = await asyncio.shield(attempt)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await attempt
                raise
            if delivered:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _deliver(self, writer: Writer, payload: RawPayload) -> bool:
        messages = [] if payload.payload is None else [payload]
        try:
            await writer.write(messages, self.dead_letters(payload))
        except IntakeUnavailable as exc:
            log.warning("batch not acknowledged by Kafka, will retry: %s", exc)
            return False
        await self.acknowledge(payload)
        return True

    def close(self) -> None:
        """Close the file being read."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def _commit(self, checkpoint: Checkpoint) -> None:
        write_checkpoint(self.config.checkpoint, checkpoint)
        self.committed = checkpoint

    # -- batches -----------------------------------------------------------------------

    def _seal(self, batch: _Batch) -> RawPayload:
        assert self._file is not None
        batch.end = self._file.checkpoint()
        self._seq += 1
        self._pending[self._seq] = batch
        body = b"\n".join(batch.lines) if batch.lines else None
        return RawPayload(body, self.config.cluster, Source(self.origin_topic, None, self._seq))

    def _add(self, batch: _Batch, line: bytes) -> bool:
        """Take one line (without its newline) into ``batch``; False if the batch is full."""
        if batch.lines and (
            len(batch.lines) >= self.config.max_events
            or batch.size + 1 + len(line) >= self.config.max_bytes
        ):
            return False
        if not batch:
            batch.started = time.monotonic()
        batch.lines.append(line)
        batch.size += len(line) + (1 if len(batch.lines) > 1 else 0)
        return True

    def _dead(self, batch: _Batch, f: _Open, size: int, head: bytes) -> None:
        limit = self.config.max_event_bytes
        reason = (
            f"line of {size} bytes at offset {f.line_pos} of {f.path} is over the"
            f" {limit}-byte per-event limit"
        )
        if size > len(head):
            reason += f" (first {len(head)} bytes kept)"
        if not batch:
            batch.started = time.monotonic()
        origin = Source(self.origin_topic, None, f.line_pos)
        batch.dead.append(dead_letter_bytes(reason, head, origin))
        log.warning("dead letter: %s", reason)

    def _take_line(self, batch: _Batch, f: _Open, end: int, consumed: int) -> bool:
        """Take ``f.buffer[:end]`` as one line (``consumed`` bytes with its newline)."""
        size = f.skipping + end
        if size > self.config.max_event_bytes:
            self._dead(batch, f, size, bytes(f.buffer[: min(end, self.config.max_event_bytes)]))
        elif f.buffer[:end].strip() and not self._add(batch, bytes(f.buffer[:end]).rstrip(b"\r")):
            return False
        f.line_pos += f.skipping + consumed
        f.skipping = 0
        del f.buffer[:consumed]
        return True

    def _take(self, batch: _Batch, f: _Open) -> str:
        """Move complete lines from ``f.buffer`` into ``batch``."""
        took = False
        limit = self.config.max_event_bytes
        while (nl := f.buffer.find(b"\n")) >= 0:
            if not self._take_line(batch, f, nl, nl + 1):
                return _SEND  # full
            if len(batch.dead) >= _MAX_DEAD:
                return _SEND
            took = True
        if len(f.buffer) > limit:  # an over-long line: keep its head, count the rest
            f.skipping += len(f.buffer) - limit
            del f.buffer[limit:]
        return _MORE if took else _IDLE

    # -- reading -----------------------------------------------------------------------

    async def _fill(self, batch: _Batch) -> str:
        """One step: take buffered lines, else read, else look for rotation."""
        f = self._file
        if f is None:
            return _MORE if self._open_next() else _IDLE
        state = self._take(batch, f)
        if state != _IDLE:
            return state
        data = f.peek()
        # checked after the read: bytes read before a cut are the old file's, and bytes
        # read after it are dropped here (they are read again from the copy or from 0)
        if f.current and not f.unchanged():
            return self._truncated(batch, f)
        if data:
            f.append(data)
            return _MORE
        return await self._at_end(batch, f)

    async def _at_end(self, batch: _Batch, f: _Open) -> str:
        """Nothing new in the open file: has it been rotated or truncated?"""
        if not f.current:
            return await self._finish(batch, f)
        try:
            st = os.stat(f.path)
        except FileNotFoundError:
            return _IDLE  # renamed, the new one not created yet: keep reading the old one
        if (st.st_dev, st.st_ino) != (f.device, f.inode):
            log.info("%s was rotated (renamed); reading the old file to its end", f.path)
            f.current = False
            return _MORE
        if os.fstat(f.fd).st_size < f.read_pos:
            return self._truncated(batch, f)
        return _IDLE

    async def _finish(self, batch: _Batch, f: _Open) -> str:
        """At the end of a file no longer written: wait a little for a last line's newline,
        then take it as it is; send the batch; go on with the next file."""
        if f.buffer or f.skipping:
            if not f.waited:
                deadline = time.monotonic() + self.config.partial_wait
                while time.monotonic() < deadline:
                    await asyncio.sleep(min(self.config.poll_interval, 0.05))
                    if data := f.peek():
                        f.append(data)
                        return _MORE
                f.waited = True
                log.warning(
                    "%s: last line has no newline after %.1fs; taking it as it is",
                    f.path,
                    self.config.partial_wait,
                )
            if not self._take_line(batch, f, len(f.buffer), len(f.buffer)):
                return _SEND
        if batch:
            return _SEND  # what belongs to this file goes before it is left
        self._next_file(f)
        return _MORE

    def _next_file(self, finished: _Open) -> None:
        """Leave a finished file for the next rotated one, else the followed path."""
        try:
            mtime = os.fstat(finished.fd).st_mtime_ns
        except OSError:
            mtime = 0
        finished.close()
        self._file = None
        if not self._queue:
            self._queue = self._rotated_after(mtime, exclude=(finished.device, finished.inode))
        self._open_next()

    def _open_next(self) -> bool:
        """Open the next file to read from 0: a queued rotated one, else the followed path."""
        while self._queue:
            path = self._queue.pop(0)
            f = _open(path, 0, current=False)
            if f is not None:
                log.info("reading rotated file %s", path)
                self._switch(f)
                return True
        f = _open(self.config.path, 0, current=True)
        if f is None:
            return False
        log.info("following %s from its beginning", self.config.path)
        self._switch(f)
        return True

    def _switch(self, f: _Open) -> None:
        """Read ``f`` from now on; checkpoint its start when everything before it is
        acknowledged (a batch never spans two files)."""
        self._file = f
        if not self._pending:
            self._commit(f.checkpoint())

    def _truncated(self, batch: _Batch, f: _Open) -> str:
        """The followed file was cut (copytruncate): read what was not read yet from its
        copy, then the file again from 0."""
        copy = self._find_copy(f.prefix, f.read_pos)
        if copy is not None:
            new = _open(copy, f.read_pos, current=False)
            if new is not None and new.prefix == f.prefix[: len(new.prefix)]:
                log.info("%s was truncated; reading its rest from the copy %s", f.path, copy)
                new.buffer, new.skipping, new.line_pos = f.buffer, f.skipping, f.line_pos
                new.prefix = f.prefix
                f.close()
                self._file = new
                self._queue = self._rotated_after(_mtime(copy), exclude=(new.device, new.inode))
                return _MORE
        if batch:
            return _SEND  # lines read before the cut go out under the old identity first
        log.warning(
            "%s was truncated and no copy of it was found (%s): %d bytes after offset %d"
            " were not read; reading it from 0",
            f.path,
            ", ".join(self.config.globs()),
            f.read_pos - f.line_pos,
            f.line_pos,
        )
        f.close()
        self._file = None
        self._queue = []
        self._open_next()
        return _MORE

    def _rotated(self) -> list[Path]:
        """Rotated files of the followed path (not compressed), oldest first."""
        folder = glob.escape(str(self.config.path.parent))
        found: set[Path] = set()
        for pattern in self.config.globs():
            for name in glob.glob(os.path.join(folder, pattern)):
                p = Path(name)
                if p != self.config.path and not p.name.endswith(_COMPRESSED) and p.is_file():
                    found.add(p)
        return sorted(found, key=lambda p: (_mtime(p), p.name))

    def _rotated_after(self, mtime_ns: int, exclude: tuple[int, int]) -> list[Path]:
        """Rotated files modified after ``mtime_ns``, oldest first, but not ``exclude`` nor
        the followed file."""
        skip = {exclude, _identity(self.config.path)}
        return [p for p in self._rotated() if _mtime(p) > mtime_ns and _identity(p) not in skip]

    def _find_copy(self, prefix: bytes, size: int) -> Path | None:
        """The newest rotated file that starts with ``prefix`` and has ``size`` bytes."""
        if not prefix:
            return None
        for p in reversed(self._rotated()):
            with contextlib.suppress(OSError):
                if p.stat().st_size >= size and _head(p, len(prefix)) == prefix:
                    return p
        return None

    # -- start-up ----------------------------------------------------------------------

    async def _start(self) -> None:
        checkpoint = read_checkpoint(self.config.checkpoint)
        self.committed = checkpoint
        if checkpoint is not None:
            found = self._locate(checkpoint)
            if found is not None:
                self._file = found
                log.info(
                    "resuming %s at offset %d (checkpoint %s)",
                    found.path,
                    found.line_pos,
                    self.config.checkpoint,
                )
                return
            log.warning(
                "the file of checkpoint %s (%s, inode %d) is gone; reading the files rotated"
                " after it, then %s from its beginning",
                self.config.checkpoint,
                checkpoint.path,
                checkpoint.inode,
                self.config.path,
            )
            self._queue = self._rotated_after(checkpoint.mtime_ns, exclude=(-1, -1))
        while not self._open_next():
            if not self._missing_logged:
                log.warning("%s does not exist yet; waiting for it", self.config.path)
                self._missing_logged = True
            await asyncio.sleep(max(self.config.poll_interval, 0.25))

    def _locate(self, cp: Checkpoint) -> _Open | None:
        """Open the checkpointed file at its offset: the followed path or a rotated file with
        its device and inode, else (copytruncate) a rotated copy with its first bytes."""
        candidates = [self.config.path, *reversed(self._rotated())]
        same = [p for p in candidates if _identity(p) == (cp.device, cp.inode)]
        copies = [p for p in candidates[1:] if p not in same] if cp.fingerprint.length else []
        for p in same + copies:
            if not cp.fingerprint.matches(_head(p, cp.fingerprint.length)) or _size(p) < cp.offset:
                continue
            f = _open(p, cp.offset, current=p == self.config.path)
            if f is None:
                continue
            if not f.current:
                self._queue = self._rotated_after(_mtime(p), exclude=(f.device, f.inode))
            return f
        return None


def _head(p: Path, n: int) -> bytes:
    try:
        with open(p, "rb") as fh:
            return fh.read(n)
    except OSError:
        return b""


def _mtime(p: Path) -> int:
    try:
        return p.stat().st_mtime_ns
    except OSError:
        return 0


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return -1


def _identity(p: Path) -> tuple[int, int] | None:
    try:
        st = p.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
