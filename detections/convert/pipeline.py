"""The Klaxon processing pipeline: pySigma transformations from rule fields to a target's fields.

In order: fields with no raw equivalent fail with their reason; ``response.success`` becomes a
comparison on ``responseStatus.code``; derived fields become the raw paths they stand for (one
to many: ``podSpec.hostPID`` is an OR over the places a pod spec lives); a target that cannot
search lists refuses multi-valued paths; raw paths get the target's own names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sigma.exceptions import SigmaTransformationError
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import SetStateTransformation
from sigma.processing.transformations.base import (
    DetectionItemTransformation,
    FieldMappingTransformationBase,
)
from sigma.rule import SigmaDetection, SigmaDetectionItem
from sigma.types import SigmaBool, SigmaCompareExpression, SigmaExists, SigmaNumber

from detections.convert.fields import list_prefixes, no_raw_equivalent, raw_paths, split_mark
from detections.fields import derived_root

#: ``responseStatus.code`` below this is a success (the engine's ``response.success``; a
#: ``101 Switching Protocols`` of an exec stream is below it too).
SUCCESS_BELOW = 400


@dataclass
class NoRawEquivalent(DetectionItemTransformation):
    """Fails a rule that tests a field no raw path can express (unless the target can)."""

    expressible: frozenset[str] = frozenset()

    def apply_detection_item(self, detection_item: SigmaDetectionItem) -> None:
        field = detection_item.field
        if field is None:
            return None
        field, _ = split_mark(field)
        if field in self.expressible:
            return None
        reason = no_raw_equivalent(field)
        if reason is not None:
            raise SigmaTransformationError(f"no raw equivalent: {reason}")
        return None


@dataclass
class ResponseSuccess(DetectionItemTransformation):
    """``response.success: true|false`` as ``responseStatus.code`` below or from 400."""

    def apply_detection_item(
        self, detection_item: SigmaDetectionItem
    ) -> SigmaDetection | SigmaDetectionItem | None:
        if detection_item.field != "response.success":
            return None
        code = "responseStatus.code"
        if all(isinstance(v, SigmaExists) for v in detection_item.value):
            return SigmaDetectionItem(code, [], list(detection_item.value))
        wanted = set()
        for value in detection_item.value:
            if not isinstance(value, SigmaBool):
                raise SigmaTransformationError(
                    f"'response.success' is true or false, not {value!r}"
                )
            wanted.add(value.boolean)
        if wanted == {True, False}:
            return SigmaDetectionItem(code, [], [SigmaExists(True)])
        op = (
            SigmaCompareExpression.CompareOperators.LT
            if wanted == {True}
            else SigmaCompareExpression.CompareOperators.GTE
        )
        return SigmaDetectionItem(
            code, [], [SigmaCompareExpression(SigmaNumber(SUCCESS_BELOW), op)]
        )


@dataclass
class RawPaths(FieldMappingTransformationBase):
    """Derived fields as the raw paths they stand for (any of them may match)."""

    def apply_field_name(self, field: str | None) -> str | list[str] | None:
        if field is None:
            return None
        base, mark = split_mark(field)
        if derived_root(base) is None:
            return None
        paths = raw_paths(base)
        return None if paths == (base,) else [p + mark for p in paths]


@dataclass
class NoLists(DetectionItemTransformation):
    """Fails a rule that tests a raw path crossing a list, for targets that cannot search one."""

    target: str = ""

    def apply_detection_item(self, detection_item: SigmaDetectionItem) -> None:
        field = split_mark(detection_item.field)[0] if detection_item.field is not None else None
        crossed = list_prefixes(field) if field is not None else ()
        if crossed:
            raise SigmaTransformationError(
                f"the {self.target} target does not search inside lists: "
                f"'{field}' crosses the list '{crossed[0]}'"
            )
        return None


@dataclass
class NoOutsideOverLists(DetectionItemTransformation):
    """Fails a rule with ``|outside`` over a list, for targets that match lists as a whole."""

    target: str = ""

    def apply_detection_item(self, detection_item: SigmaDetectionItem) -> None:
        field, mark = split_mark(detection_item.field or "")
        if mark:
            raise SigmaTransformationError(
                f"Klaxon-only modifier: '{field}|outside' (some element of a list matches none "
                f"of the values) has no {self.target} equivalent; its queries test a list as "
                "a whole"
            )
        return None


@dataclass
class TargetNames(FieldMappingTransformationBase):
    """Raw paths under the target's own field names."""

    name: Callable[[str], str] = str

    def apply_field_name(self, field: str | None) -> str | list[str] | None:
        if field is None:
            return None
        named = self.name(field)
        return None if named == field else named


def klaxon_pipeline(
    target: str,
    name: Callable[[str], str],
    *,
    expressible: frozenset[str] = frozenset(),
    lists: bool = True,
    outside_lists: bool = False,
    table: str | None = None,
) -> ProcessingPipeline:
    """The processing pipeline for one target (see the module docstring)."""
    steps: list[tuple[str, DetectionItemTransformation | SetStateTransformation]] = [
        ("klaxon_no_raw_equivalent", NoRawEquivalent(expressible)),
        ("klaxon_response_success", ResponseSuccess()),
        ("klaxon_raw_paths", RawPaths()),
    ]
    if not outside_lists:
        steps.append(("klaxon_no_outside_over_lists", NoOutsideOverLists(target)))
    if not lists:
        steps.append(("klaxon_no_lists", NoLists(target)))
    steps.append(("klaxon_target_names", TargetNames(name)))
    if table is not None:
        steps.append(("klaxon_table", SetStateTransformation("table", table)))
    return ProcessingPipeline(
        name=f"Klaxon audit fields for {target}",
        priority=20,
        items=[ProcessingItem(t, identifier=i) for i, t in steps],
    )
