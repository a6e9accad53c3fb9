"""Which partition of the events topic an audit event belongs to (pure).

Events are keyed by ``<cluster>|<user.username>`` and placed with the hash of Kafka's default
partitioner (murmur2, sign bit cleared, modulo the partition count), so everything one
principal does lands on one partition, in order, whoever produced it: our normalise agent,
a Java client or aiokafka's `DefaultPartitioner`.

>>> ev = {"cluster": "prod", "user": {"username": "alice"}}
>>> event_key(ev)
b'prod|alice'
>>> partition_for(b"prod|alice", 4) == partition_for(event_key(ev), 4)
True
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiokafka.partitioner import murmur2

__all__ = ["event_key", "group_by_partition", "partition_for"]


def event_key(event: dict[str, Any]) -> bytes:
    """The routing key ``cluster|user.username`` (missing parts are empty strings).

    >>> event_key({"user": {"username": "system:anonymous"}})
    b'|system:anonymous'
    >>> event_key({"cluster": "c", "user": "not-an-object"})
    b'c|'
    """
    user = event.get("user")
    name = user.get("username") if isinstance(user, dict) else None
    cluster = event.get("cluster")
    return (
        f"{cluster if isinstance(cluster, str) else ''}|{name if isinstance(name, str) else ''}"
    ).encode()


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partition for ``key``: ``(murmur2(key) & 0x7fffffff) % partitions``.

    >>> partition_for(b"", 4), partition_for(b"prod|alice", 1)
    (1, 0)
    """
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def group_by_partition(
    events: Iterable[dict[str, Any]], partitions: int
) -> dict[int, list[dict[str, Any]]]:
    """Events grouped by their partition; input order is kept inside each group.

    >>> evs = [{"cluster": "c", "user": {"username": u}} for u in ("a", "b", "a")]
    >>> groups = group_by_partition(evs, 8)
    >>> sum(len(g) for g in groups.values()), [e["user"]["username"] for e in groups[
    ...     partition_for(b"c|a", 8)]]
    (3, ['a', 'a'])
    """
    groups: dict[int, list[dict[str, Any]]] = {}
    cache: dict[bytes, int] = {}
    for event in events:
        key = event_key(event)
        part = cache.get(key)
        if part is None:
            part = cache[key] = partition_for(key, partitions)
        groups.setdefault(part, []).append(event)
    return groups
