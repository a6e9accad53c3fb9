"""Klaxon rules as SIEM queries, through pySigma backends (the optional ``convert`` extra).

``convert_ruleset(ruleset, target)`` writes one query per rule (and correlation) for a target
in :data:`TARGETS` (``splunk``, ``elasticsearch``, ``kusto``, ``sqlite``), or says why it
cannot: a derived field with no raw equivalent, a list the target cannot search, a named list
that is empty, a correlation the backend does not support. Field mapping is the Klaxon
processing pipeline (:mod:`detections.convert.pipeline`); the pure field facts are in
:mod:`detections.convert.fields`. Importing this package imports pySigma.
"""

from detections.convert.converter import Outcome, Report, convert_ruleset
from detections.convert.sigma import NotConvertible, to_sigma
from detections.convert.targets import TARGETS, Target

__all__ = [
    "TARGETS",
    "NotConvertible",
    "Outcome",
    "Report",
    "Target",
    "convert_ruleset",
    "to_sigma",
]
