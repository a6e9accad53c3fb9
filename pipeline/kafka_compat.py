"""Fixes to aiokafka's behaviour on uvloop; each names its upstream issue, goes when it is fixed.

**A write on a connection the broker closed** (aio-libs/aiokafka#1038, open in 0.14.0). When a
broker dies, uvloop closes the socket's transport at once, but aiokafka still thinks the
connection is up until its reader task runs. A request sent in that window calls
``transport.write``: asyncio's transport ignores the write (the request then fails as
"connection closed"), uvloop's raises ``RuntimeError``. aiokafka expects only ``OSError`` from
a write, so the ``RuntimeError`` escapes and ends whichever background task sent the request:
the client's metadata synchronizer, the group coordinator's routine, the producer's sender.
Nothing logs it, nothing restarts them. A worker whose metadata task died waits forever for
metadata, so it never reconnects, and its consumer never fetches or commits again, although
the broker came back long ago. ``tests/pipeline/test_broker_restart.py`` hit this under CPU
load.

`install` makes aiokafka's connection treat that ``RuntimeError`` as the broken connection it
is: the connection is closed and ``KafkaConnectionError`` raised, which every aiokafka caller
already retries.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

__all__ = ["install", "installed"]

_MARK = "_klaxon_closed_transport_is_a_broken_connection"


def install() -> None:
    """Patch aiokafka's connection (idempotent; harmless on asyncio's loop, whose writes on a
    closed transport never raise)."""
    from aiokafka.conn import AIOKafkaConnection

    for name in ("send", "_send_sasl_token"):
        method = getattr(AIOKafkaConnection, name)
        if not getattr(method, _MARK, False):
            setattr(AIOKafkaConnection, name, _closed_transport_is_broken(method))


def installed() -> bool:
    """Whether `install` ran in this process.

    >>> install(); installed()
    True
    """
    from aiokafka.conn import AIOKafkaConnection

    return bool(getattr(AIOKafkaConnection.send, _MARK, False))


def _closed_transport_is_broken(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` (which writes to the connection's transport), raising aiokafka's
    ``KafkaConnectionError`` instead of uvloop's ``RuntimeError`` when the transport is
    closed; any other ``RuntimeError`` is not ours to change and propagates."""
    from aiokafka.conn import CloseReason
    from aiokafka.errors import KafkaConnectionError, KafkaError

    @functools.wraps(method)
    def guarded(conn: Any, *args: Any, **kwargs: Any) -> Any:
        writer = conn._writer
        try:
            return method(conn, *args, **kwargs)
        except RuntimeError as exc:  # aiokafka's own errors are RuntimeErrors too: not ours
            if isinstance(exc, KafkaError) or writer is None or not writer.transport.is_closing():
                raise
            conn.close(reason=CloseReason.CONNECTION_BROKEN, exc=exc)
            raise KafkaConnectionError(
                f"Connection at {conn.host}:{conn.port} broken: the transport is closed"
            ) from exc

    setattr(guarded, _MARK, True)
    return guarded
