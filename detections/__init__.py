"""Sigma-compatible detections for Kubernetes audit events: loader, compiler and engine.

>>> from detections import load_rules, Engine, Match, RuleLoadError
"""

from schemas.native import extend

__path__ = extend(__name__, __path__)  # compiled modules first, when current

from detections.engine import Engine, Match
from detections.errors import DetectionError, Lint, Problem, RuleLoadError
from detections.loader import load_rules
from detections.rule import Rule, RuleSet

__all__ = [
    "DetectionError",
    "Engine",
    "Lint",
    "Match",
    "Problem",
    "Rule",
    "RuleLoadError",
    "RuleSet",
    "load_rules",
]
