"""Errors of the stateful detectors (a branch of :class:`detections.errors.DetectionError`).

Rule-file mistakes in new terms documents are reported as :class:`detections.RuleLoadError`
(one error listing every problem), like every other rule file; the classes here cover state,
models and specs that cannot be used.
"""

from __future__ import annotations

from detections.errors import DetectionError


class StatefulError(DetectionError):
    """Root of every error raised by ``detections.stateful``."""


class UnsupportedCorrelation(StatefulError):
    """A loaded Sigma correlation uses a feature the stateful engine does not implement."""


class StateFormatError(StatefulError):
    """A checkpointed state value has the wrong shape or version (it was not written by us)."""


class ModelFormatError(StatefulError):
    """A saved anomaly model file is not a Klaxon model or has an unsupported version."""


class TrainingError(StatefulError):
    """An offline model could not be trained (too little data, unreadable logs)."""
