"""The stateful detections' options (`StatefulOptions`) and how the worker's settings map to
them (`options_from_settings`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from detections.stateful import AnomalySettings
from detections.stateful import Settings as CorrelationSettings
from detections.stateful.offline import IsolationModel
from pipeline.config import Settings, check_model

__all__ = ["StatefulOptions", "options_from_settings"]


@dataclass(frozen=True)
class StatefulOptions:
    """Which stateful families run (one switch per family, named like it: `Family.name`),
    and the pipeline-side knobs (times in seconds)."""

    correlations: bool = True
    new_terms: bool = True
    anomaly: bool = True
    silence: bool = True
    #: A cluster with no event for this long (event time) is reported quiet.
    silence_threshold: float = 600.0
    #: Event-time seconds between two heartbeats of one cluster from one partition.
    heartbeat_every: float = 30.0
    #: Wall seconds without input after which a partition's watermark follows the wall clock.
    idle_grace: float = 60.0
    #: The timer judges correlation and anomaly windows this far behind the watermark: a
    #: partition's events are only roughly in time order (raw messages of several raw
    #: partitions interleave), and judging a group at the partition's newest time would make
    #: its own slightly older events late.
    advance_delay: float = 120.0
    #: Wall seconds between two checkpoints of principals whose only change is their open
    #: window's counts (a closed window, i.e. a baseline change, is written at once). 0, the
    #: default, writes them with every message, like every other family's state: a crash then
    #: loses nothing. A larger value writes less but a crash loses up to this much of the open
    #: windows' counts (the events are not read again), and with them anomaly alerts.
    anomaly_checkpoint_every: float = 0.0
    #: Wall seconds between prunes of expired new terms.
    prune_every: float = 60.0
    #: Wall seconds between two checkpoints of a partition's HalfSpaceTrees after it learnt a
    #: window; 0 (default): with the message or tick that changed it (exact, as above).
    hst_checkpoint_every: float = 0.0
    correlation: CorrelationSettings = field(default_factory=CorrelationSettings)
    anomaly_settings: AnomalySettings = field(default_factory=AnomalySettings)
    #: The offline IsolationForest (`klaxon anomaly train`): scores every closed
    #: per-principal window, all windows closed by one message or tick in one batch. It
    #: needs the online model's windows, which are kept even when ``anomaly`` is off.
    offline_model: IsolationModel | None = field(default=None, compare=False, repr=False)

    @property
    def windows(self) -> bool:
        """Whether per-principal windows are kept (for the online or the offline model)."""
        return self.anomaly or self.offline_model is not None


def options_from_settings(settings: Settings) -> StatefulOptions:
    """The worker's options from its `Settings` (``KLAXON_*`` variables; loads the model).

    Each registered family with a `Family.setting` is switched on when that value is listed
    in ``KLAXON_STATEFUL_DETECTORS``.

    >>> o = options_from_settings(Settings(stateful_detectors=("anomaly",), idle_grace=5.0))
    >>> o.correlations, o.anomaly, o.idle_grace, o.anomaly_settings.threshold
    (False, True, 5.0, 4.0)
    """
    from pipeline.stateful.registry import FAMILIES  # the families import this module

    listed = set(settings.stateful_detectors)
    model = None if settings.anomaly_model is None else check_model(settings.anomaly_model)
    options = StatefulOptions(
        silence_threshold=settings.silence_threshold,
        idle_grace=settings.idle_grace,
        advance_delay=settings.advance_delay,
        correlation=CorrelationSettings(lateness=settings.correlation_lateness),
        anomaly_settings=AnomalySettings(threshold=settings.anomaly_threshold),
        offline_model=model,
    )
    switches: dict[str, Any] = {
        f.name: f.setting in listed for f in FAMILIES if f.setting is not None
    }
    return dataclasses.replace(options, **switches)
