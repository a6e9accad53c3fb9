"""Worker tuning from ``klaxon worker``'s flags, apart from `pipeline.config.Settings`.

A module of its own, importing nothing heavy: ``klaxon status`` (a terminal's health check)
builds the worker's parser, whose defaults come from here, and must not import pydantic.
`pipeline.config` re-exports `WorkerOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WorkerOptions"]


@dataclass(frozen=True)
class WorkerOptions:
    """Worker tuning that is not part of the shared `Settings` (flags of ``klaxon worker``)."""

    session_timeout: float = 6.0
    heartbeat_interval: float = 1.0
    rebalance_timeout: float = 20.0
    commit_interval: float = 1.0
    stream_buffer_maxsize: int = 256
    max_poll_records: int = 200
    producer_linger: float = 0.005
    fetch_max_wait: float = 0.05
    handoff_events: int = 20_000
    #: Events messages of consecutive raw messages are joined per partition up to this many
    #: events (`pipeline.coalesce`) ...
    events_batch: int = 1000
    #: ... or until the oldest waited this many seconds (0: one message per raw message).
    events_linger: float = 0.02
    health_interval: float = 30.0
    reload_interval: float = 5.0
    #: Outputs larger than this become dead letters instead (Kafka's default topic limit is
    #: 1,048,588 bytes; lower this if your topics' ``max.message.bytes`` is lower).
    max_message_bytes: int = 1_000_000
    #: Seconds an input partition may keep uncommitted messages without its commit moving
    #: before it counts as stalled.
    stall_after: float = 60.0
    #: Seconds without the commit moving, messages waiting, after which a partition is read
    #: again from its next offset (Faust can drop fetched messages around a rebalance).
    rewind_after: float = 10.0
    #: Seconds stalled after which the worker exits (non-zero) to be restarted.
    stall_exit: float = 300.0
    #: Produce with an idempotent producer (Apache Kafka; Tansu refuses it).
    idempotent: bool = False
    loglevel: str = "warning"
    #: The event loop of the worker and of Faust's Kafka consumer thread: ``uvloop`` (libuv,
    #: in C; asyncio's when uvloop is not installed) or ``asyncio``.
    event_loop: str = "uvloop"
    status_file: str | None = None
