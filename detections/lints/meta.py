"""Lints of a document's metadata: ATT&CK tags, Threat Matrix ids, level, logsource, tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from detections.lints.base import Context, Finding, Subject
from detections.rule import TECHNIQUE
from detections.yamlsrc import Path as DocPath


def no_attack(subject: Subject, context: Context) -> Iterator[Finding]:
    """A rule without an ATT&CK technique tag (``attack.tNNNN``)."""
    if subject.kind == "rule" and not any(TECHNIQUE.match(t) for t in subject.tags):
        yield ("tags",), "no ATT&CK technique tag (attack.tNNNN)", None


def attack_tag(subject: Subject, context: Context) -> Iterator[Finding]:
    """ATT&CK tags checked against the bundled mitre catalogue."""
    attack = _mitre()
    if attack is None:
        return
    tags = subject.tags
    for message in attack.validate_tags(tags):
        tag = message.split(":", 1)[0]
        index = next((i for i, t in enumerate(tags) if t == tag), None)
        path: DocPath = ("tags", index) if index is not None else ("tags",)
        yield path, message.split(": ", 1)[-1] if index is not None else message, None


def mtmk(subject: Subject, context: Context) -> Iterator[Finding]:
    """Microsoft Threat Matrix for Kubernetes ids checked against the bundled catalogue."""
    attack = _mitre()
    if attack is None:
        return
    for message in attack.validate_mtmk(subject.mtmk):
        yield ("klaxon", "mtmk"), message, None


def no_level(subject: Subject, context: Context) -> Iterator[Finding]:
    """A rule without ``level`` (alerts then use medium)."""
    if subject.kind == "rule" and subject.level is None:
        yield (), "no 'level'; alerts will use 'medium'", None


def logsource(subject: Subject, context: Context) -> Iterator[Finding]:
    """A rule whose logsource is not Kubernetes audit."""
    source = subject.logsource
    if source and (source.get("product") != "kubernetes" or source.get("service") != "audit"):
        yield ("logsource",), "logsource is not {product: kubernetes, service: audit}", None


def no_tests(subject: Subject, context: Context) -> Iterator[Finding]:
    """A packaged rule without both a 'hit' and a 'miss' fixture."""
    expects = {t.expect for t in subject.tests}
    if subject.kind == "rule" and subject.packaged and expects != {"hit", "miss"}:
        yield ("klaxon",), "rule needs at least one 'hit' and one 'miss' test", None


def _mitre() -> Any:
    """The ``mitre.attack`` module when the mitre package is importable, else None."""
    try:
        from mitre import attack
    except ImportError:  # pragma: no cover - mitre ships with klaxon
        return None
    return attack
