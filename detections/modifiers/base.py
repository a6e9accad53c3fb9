"""The modifier interface: what a modifier says about values, combinations and predicates."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from detections.fields import Getter
from detections.matchers import Predicate


@dataclass(frozen=True, slots=True)
class Target:
    """The field a comparison reads: its path, its walker and its leaves cached per event."""

    path: str
    raw: Getter
    leaves: Getter


@dataclass(frozen=True, slots=True)
class Spec:
    """The modifiers of one comparison, resolved against the registry."""

    names: tuple[str, ...]
    match: MatchType
    match_all: bool
    cased: bool
    encoding: Encoding | None
    regex_flags: str  # sorted RE2 flag letters, e.g. "im"


class Modifier:
    """One Sigma modifier, known to the registry by ``name``."""

    #: Whether a comparison with this modifier still tests each text of a field on its own
    #: (then the engine can guard the rule with one memoized lookup per field value).
    text_wise: ClassVar[bool] = True
    #: Checks run in this order across modifiers (then in the order they are written).
    check_order: ClassVar[int] = 3

    def __init__(self, name: str) -> None:
        self.name = name

    def check(self, match: MatchType, names: Sequence[str]) -> str | None:
        """Why this modifier cannot be used with ``match`` and the other ``names``, if so."""
        return None


class MatchType(Modifier):
    """How values are compared with a field (``contains``, ``re``, ``gt``...): at most one."""

    #: Whether ``|cased`` means something with this match type.
    cased: ClassVar[bool] = True
    #: Whether base64 encodings may transform the values first.
    encodable: ClassVar[bool] = False

    def compile(self, target: Target, spec: Spec, values: Sequence[Any]) -> Predicate:
        """The predicate of ``target`` compared with (list-expanded) ``values``."""
        raise NotImplementedError

    def text_test(self, spec: Spec, values: Sequence[Any]) -> Callable[[str], bool] | None:
        """A memoized test one text of the field passes whenever the comparison holds."""
        return None


class Flag(Modifier):
    """Changes how the match type compares (``all``, ``cased``)."""

    check_order = 1

    def check(self, match: MatchType, names: Sequence[str]) -> str | None:
        if self.name == "cased" and not match.cased:
            return f"'cased' has no meaning with '{match.name}'"
        return None


class RegexFlag(Flag):
    """An RE2 flag for ``|re`` (``i``, ``m``, ``s`` and their long names)."""

    check_order = 0

    def __init__(self, name: str, letter: str) -> None:
        super().__init__(name)
        self.letter = letter

    def check(self, match: MatchType, names: Sequence[str]) -> str | None:
        if match.name != "re":
            return f"modifier '{self.name}' is a regex flag and needs '|re' before it"
        return None


class Transform(Modifier):
    """Rewrites the rule's values before any comparison (``expand``)."""

    def apply(
        self, values: Sequence[Any], lists: Mapping[str, Sequence[Any]]
    ) -> list[tuple[int, list[Any]]]:
        """Per original value index, the values it stands for; raises MatchSpecError."""
        raise NotImplementedError


class Encoding(Modifier):
    """Encodes each string value into the forms to look for (``base64``, ``base64offset``)."""

    check_order = 2
    #: The match type this encoding needs, if any (fragments only make sense with contains).
    needs: ClassVar[str | None] = None
    #: Why, for the error message.
    needs_reason: ClassVar[str] = ""

    def variants(self, value: str) -> list[str]:
        """The encoded forms of ``value``."""
        raise NotImplementedError

    def check(self, match: MatchType, names: Sequence[str]) -> str | None:
        if not match.encodable:
            return f"base64 modifiers cannot be combined with '{match.name}'"
        if self.needs is not None and match.name != self.needs:
            return f"'{self.name}' needs '|{self.needs}' ({self.needs_reason})"
        return None
