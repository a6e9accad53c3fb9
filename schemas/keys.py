"""The rules of the data that every package must agree on, defined once.

- `cluster_of`: an event's cluster, ``"default"`` when it names none (the normaliser writes
  the same value into every event it emits, so the two never disagree);
- `principal_key`: ``<cluster>|<user.username>``, the identity the stateful detectors keep
  state for and the key the events topic is partitioned by (so everything one principal
  does lands in one partition, in order);
- `CLUSTER_HEADER`: the raw-message header that names the cluster of events whose envelope
  names none (written by replay and intake, read by the normalise step).

>>> ev = {"cluster": "prod", "user": {"username": "alice"}}
>>> cluster_of(ev), principal_key(ev), routing_key(ev)
('prod', 'prod|alice', b'prod|alice')
>>> principal_key({"user": "not-an-object"}), cluster_of({"cluster": ""})
('default|', 'default')
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CLUSTER_HEADER",
    "DEFAULT_CLUSTER",
    "cluster_of",
    "principal_key",
    "routing_key",
    "username_of",
]

#: The cluster of an event whose envelope, raw-message header and settings name none.
DEFAULT_CLUSTER = "default"
#: Raw-message header naming the cluster of events whose envelope names none.
CLUSTER_HEADER = "klaxon-cluster"


def cluster_of(event: dict[str, Any]) -> str:
    """The event's cluster name (a non-empty string), else `DEFAULT_CLUSTER`."""
    cluster = event.get("cluster")
    return cluster if cluster.__class__ is str and cluster else DEFAULT_CLUSTER


def username_of(event: dict[str, Any]) -> str:
    """``user.username`` as a string ("" when absent or not a string).

    >>> username_of({"user": {"username": 3}}), username_of({})
    ('', '')
    """
    user = event.get("user")
    if user.__class__ is not dict:
        return ""
    name = user.get("username")
    return name if name.__class__ is str else ""


def principal_key(event: dict[str, Any]) -> str:
    """``<cluster>|<user.username>``: whose state an event updates, and its partition key."""
    user = event.get("user")
    name = user.get("username") if user.__class__ is dict else None
    cluster = event.get("cluster")
    return (
        f"{cluster if cluster.__class__ is str and cluster else DEFAULT_CLUSTER}"
        f"|{name if name.__class__ is str else ''}"
    )


def routing_key(event: dict[str, Any]) -> bytes:
    """`principal_key` as the Kafka message key of the events topic."""
    return principal_key(event).encode()
