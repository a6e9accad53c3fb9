"""Stateful detections in the detect step, without Kafka (pure core; the Faust shell is
`pipeline.tables`).

`StatefulProcessor` (`pipeline.stateful.processor`) is called once per events message with
the message's events and the stateless `Match`es the engine found in them, and returns the
stateful alerts (the `detections.alert.to_alert` shape). It runs every registered *family*
(`pipeline.stateful.registry.FAMILIES`), each a `pipeline.stateful.family.Family` over a pure
detector of `detections.stateful`, in this order:

========================  =====  ===========================================================
family (module)           kinds  input
========================  =====  ===========================================================
`correlations`            ``c``  matches of correlation base rules; re-keyed when the group
                                 is not co-partitioned
`new_terms`               ``n``  matches of new terms base rules; expired terms pruned
`anomaly`                 ``a``  every event, per principal; the offline model (if any)
                          ``h``  scores the windows closed by one message or tick in one batch
`silence`                 ``s``  newest event time per cluster, as heartbeats to the owner
========================  =====  ===========================================================

State is kept **per partition** of the events topic (`PartitionState`: each family's state,
the offsets, the watermark), and every change is listed by `StatefulProcessor.changes` as
``(key, JSON value or None)`` pairs that the shell writes to the changelog partition of the
same number, after the message's alerts. `StatefulProcessor.load` rebuilds a partition from
those pairs after a restart or a rebalance. Keys are ``<partition>|<kind>|<family key>``;
each family owns its kind letters (above), the processor the meta kind ``m`` (last applied
offset per input topic, and the event-time watermark).

Exactly-once state over at-least-once input: the meta key records the last offset applied
per input topic and is written after the states of its message, in the same changelog
partition (so if the meta arrived, so did the states). A message that is read again after a
crash with an offset not above the recorded one is not applied twice (`applied`); its
stateless alerts are still produced (same ids).

Co-partitioning: the events topic is keyed by ``cluster|user.username``, so a correlation
whose ``group-by`` contains ``user.username`` sees all of a group's events in one partition.
Any other correlation (e.g. refused requests per source IP) is *re-keyed*: its observations
are sent (`take_rekeyed`) to the ``<events>.by-group`` topic, partitioned by the group key,
and counted there (`process_rekeyed`). New terms detectors whose group or term includes
``user.username`` are exact per partition (all shipped ones); others are judged per
partition (each partition learns its own terms). Silence needs every partition's view of a
cluster: each partition sends a heartbeat per cluster (at most every ``heartbeat_every``
event-time seconds) to the by-group partition of ``#silence|<cluster>``, which owns that
cluster's silence state. A by-group message carries one field per re-keying family
(``{"v": 1, "matches": [...], "heartbeats": {...}}``).

Watermarks (`tick`, from a timer): a partition's watermark is the largest event time it has
seen (both topics); after ``idle_grace`` wall seconds without any input it follows the wall
clock, so the windows of the last burst before a lull and a cluster that went quiet are
judged even when nothing else arrives. Silent clusters are reported against it; correlation
windows are advanced, anomaly windows closed and expired terms pruned ``advance_delay``
seconds behind it, because events reach a partition only roughly in time order (raw
messages from several raw partitions interleave; a group's own events still decide its
sliding windows at once).

>>> from detections import Engine, load_rules
>>> rs = load_rules()
>>> proc = StatefulProcessor(rs, partitions=1, options=StatefulOptions(anomaly=False))
>>> rbac = {"auditID": "a1", "stage": "ResponseComplete", "verb": "create", "cluster": "c",
...         "user": {"username": "mallory"}, "responseStatus": {"code": 201},
...         "objectRef": {"resource": "clusterrolebindings", "apiGroup":
...                       "rbac.authorization.k8s.io", "name": "x"},
...         "requestReceivedTimestamp": "2026-11-27T09:00:00Z"}
>>> pod = {**rbac, "auditID": "a2", "objectRef": {"resource": "deployments", "apiGroup": "apps",
...        "namespace": "default", "name": "miner"},
...        "requestReceivedTimestamp": "2026-11-27T09:01:00Z"}
>>> events = [rbac, pod]
>>> alerts = proc.process(events, Engine(rs).evaluate_batch(events), 0, topic="ev", offset=0)
>>> [a["rule"]["title"] for a in alerts]
['RBAC change followed by a workload write by the same identity']
>>> proc.applied(0, "ev", 0), proc.applied(0, "ev", 1)
(True, False)
>>> sorted({k.split(b"|")[1] for k, _ in proc.changes(0)})
[b'c', b'm']
"""

from __future__ import annotations

from schemas.native import extend

__path__ = extend(__name__, __path__)  # compiled modules first, when current

from pipeline.stateful.correlations import PRINCIPAL_FIELD, co_partitioned
from pipeline.stateful.family import Family, FamilyContext, Tick, TrackedStore
from pipeline.stateful.new_terms import packaged_new_terms
from pipeline.stateful.options import StatefulOptions, options_from_settings
from pipeline.stateful.processor import (
    REKEY_VERSION,
    PartitionState,
    Rekeyed,
    StatefulProcessor,
)
from pipeline.stateful.registry import FAMILIES, META_KIND

__all__ = [
    "FAMILIES",
    "META_KIND",
    "PRINCIPAL_FIELD",
    "REKEY_VERSION",
    "Family",
    "FamilyContext",
    "PartitionState",
    "Rekeyed",
    "StatefulOptions",
    "StatefulProcessor",
    "Tick",
    "TrackedStore",
    "co_partitioned",
    "options_from_settings",
    "packaged_new_terms",
]
