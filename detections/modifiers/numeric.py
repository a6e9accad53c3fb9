"""``|gt``, ``|gte``, ``|lt``, ``|lte``: numeric comparisons (numeric strings count)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from detections.matchers import MatchSpecError, Predicate, combine
from detections.modifiers.base import MatchType, Spec, Target


def as_number(value: Any) -> float | None:
    """The number an event value stands for (numbers and numeric strings; not booleans).

    >>> as_number(403), as_number("1.5"), as_number(True), as_number("x")
    (403.0, 1.5, None, None)
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


class Compare(MatchType):
    """Compares each leaf's number with each bound using ``op``."""

    cased = False
    text_wise = False

    def __init__(self, name: str, op: Callable[[float, float], bool]) -> None:
        super().__init__(name)
        self.op = op

    def compile(self, target: Target, spec: Spec, values: Sequence[Any]) -> Predicate:
        bounds = []
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise MatchSpecError(f"'{self.name}' needs a number, got {v!r}", i)
            bounds.append(float(v))
        return combine(target.leaves, [self._test(b) for b in bounds], spec.match_all)

    def _test(self, bound: float) -> Callable[[Any], bool]:
        op = self.op

        def test(value: Any) -> bool:
            n = as_number(value)
            return n is not None and op(n, bound)

        return test
