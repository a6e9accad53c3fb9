"""The replay package's exceptions: one root, `ReplayError`."""

from __future__ import annotations

__all__ = ["ReplayConnectError", "ReplayDeliveryError", "ReplayError", "ReplayInputError"]


class ReplayError(Exception):
    """Root of every error raised by the replay package."""


class ReplayInputError(ReplayError):
    """An input file cannot be read or is not JSON / JSON lines / an EventList."""


class ReplayDeliveryError(ReplayError):
    """The broker did not accept a replayed message (unreachable, too large, refused)."""


class ReplayConnectError(ReplayDeliveryError):
    """The producer could not connect (no broker answers, TLS or authentication failed)."""
