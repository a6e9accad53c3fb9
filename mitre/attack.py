"""Pinned, offline MITRE ATT&CK catalogue (v18.1, Containers) and the Microsoft Threat Matrix.

The data ships in `mitre/data/` (provenance and licences in `mitre/data/NOTICE`); nothing is
fetched at runtime. Rules name ATT&CK the Sigma way, as lower-case tags: `attack.<tactic
shortname>` (`attack.privilege-escalation`) and `attack.t<id>` (`attack.t1611`,
`attack.t1053.007`). This module looks those up and lints them:

>>> technique("T1611").name
'Escape to Host'
>>> parse_tag("attack.privilege-escalation").name
'Privilege Escalation'
>>> for problem in validate_tags(["attack.execution", "attack.t1611"]):
...     print(problem)
attack.t1611: Escape to Host is a privilege-escalation technique; the tags list only execution

The catalogue holds the 48 Containers-platform techniques plus the few Enterprise techniques
outside that platform that the Microsoft matrix maps to (`Technique.containers` is False for
those), so rules may be tagged with them too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from mitre.errors import CatalogueError, TagError, UnknownIdError

__all__ = [
    "Catalogue",
    "MtmkTechnique",
    "Tactic",
    "Technique",
    "catalogue",
    "mtmk",
    "parse_tag",
    "tactic",
    "tactics",
    "technique",
    "techniques",
    "validate_mtmk",
    "validate_tags",
]

TAG_PREFIX = "attack."
_TECHNIQUE_ID = re.compile(r"T\d{4}(?:\.\d{3})?")
_TACTIC_ID = re.compile(r"TA\d{4}")
_MTMK_ID = re.compile(r"MS-TA\d{4}")
# Sigma also tags ATT&CK groups (attack.g0001) and software (attack.s0001): valid tags, but
# not techniques or tactics, so they are neither parsed nor flagged.
_GROUP_OR_SOFTWARE = re.compile(r"[gs]\d{4}")


@dataclass(frozen=True, slots=True)
class Tactic:
    """An ATT&CK tactic: a matrix column such as Privilege Escalation (TA0004)."""

    shortname: str
    name: str
    id: str
    url: str = ""
    containers: bool = True  # a column of the ATT&CK Containers matrix

    @property
    def tag(self) -> str:
        """The Sigma tag naming this tactic.

        >>> tactic("defense-evasion").tag
        'attack.defense-evasion'
        """
        return TAG_PREFIX + self.shortname


@dataclass(frozen=True, slots=True)
class Technique:
    """An ATT&CK technique or sub-technique; `tactics` are tactic shortnames."""

    id: str
    name: str
    tactics: tuple[str, ...]
    url: str
    parent: str | None = None
    containers: bool = True  # on the ATT&CK Containers platform
    description: str = ""

    @property
    def tag(self) -> str:
        """The Sigma tag naming this technique.

        >>> technique("T1053.007").tag
        'attack.t1053.007'
        """
        return TAG_PREFIX + self.id.lower()

    @property
    def is_subtechnique(self) -> bool:
        """True for sub-techniques such as T1053.007."""
        return self.parent is not None


@dataclass(frozen=True, slots=True)
class MtmkTechnique:
    """A Microsoft Threat Matrix for Kubernetes technique and the ATT&CK ids it maps to."""

    id: str
    name: str
    tactics: tuple[str, ...]
    attack: tuple[str, ...]


class Catalogue:
    """Tactics (matrix order), techniques (id order) and MTMK techniques, indexed by id."""

    def __init__(
        self,
        version: str,
        tactics: Iterable[Tactic],
        techniques: Iterable[Technique],
        mtmk: Iterable[MtmkTechnique] = (),
    ) -> None:
        self.version = version
        self.tactics: tuple[Tactic, ...] = tuple(tactics)
        self.techniques: tuple[Technique, ...] = tuple(techniques)
        self.mtmk_techniques: tuple[MtmkTechnique, ...] = tuple(mtmk)
        self._tactics = {t.shortname: t for t in self.tactics}
        self._tactic_ids = {t.id: t for t in self.tactics}
        self._techniques = {t.id: t for t in self.techniques}
        self._mtmk = {t.id: t for t in self.mtmk_techniques}
        self._check()

    def _check(self) -> None:
        problems: list[str] = []
        if len(self._tactics) != len(self.tactics) or len(self._techniques) != len(self.techniques):
            problems.append("duplicate tactic or technique ids")
        for t in self.techniques:
            if not _TECHNIQUE_ID.fullmatch(t.id):
                problems.append(f"{t.id}: malformed technique id")
            problems += [
                f"{t.id}: unknown tactic {s!r}" for s in t.tactics if s not in self._tactics
            ]
            if t.parent is not None and t.parent not in self._techniques:
                problems.append(f"{t.id}: unknown parent {t.parent}")
        for m in self.mtmk_techniques:
            problems += [
                f"{m.id}: unknown tactic {s!r}" for s in m.tactics if s not in self._tactics
            ]
            problems += [
                f"{m.id}: maps to unknown {a}" for a in m.attack if a not in self._techniques
            ]
        if problems:
            raise CatalogueError("inconsistent ATT&CK catalogue: " + "; ".join(problems))

    @classmethod
    def from_json(
        cls, attack: Mapping[str, Any], mtmk: Mapping[str, Any] | None = None
    ) -> Catalogue:
        """Build a catalogue from the `mitre/data/` documents; CatalogueError if malformed."""
        try:
            return cls(
                version=str(attack["attack_version"]),
                tactics=[
                    Tactic(t["shortname"], t["name"], t["id"], t["url"], bool(t["containers"]))
                    for t in attack["tactics"]
                ],
                techniques=[
                    Technique(
                        id=t["id"],
                        name=t["name"],
                        tactics=tuple(t["tactics"]),
                        url=t["url"],
                        parent=t["parent"],
                        containers=bool(t["containers"]),
                        description=t.get("description", ""),
                    )
                    for t in attack["techniques"]
                ],
                mtmk=[
                    MtmkTechnique(m["id"], m["name"], tuple(m["tactics"]), tuple(m["attack"]))
                    for m in (mtmk or {}).get("techniques", [])
                ],
            )
        except (KeyError, TypeError) as exc:
            raise CatalogueError(f"malformed catalogue data: {exc!r}") from exc

    def technique(self, id: str) -> Technique:
        """The technique with this ATT&CK id (any case); UnknownIdError if absent."""
        key = id.strip().upper()
        try:
            return self._techniques[key]
        except KeyError:
            raise UnknownIdError(
                f"unknown ATT&CK technique {id!r} (not in bundled ATT&CK v{self.version})"
            ) from None

    def tactic(self, name: str) -> Tactic:
        """The tactic with this shortname (or TA id); underscores are read as hyphens."""
        key = name.strip().lower().replace("_", "-").replace(" ", "-")
        found = self._tactics.get(key) or self._tactic_ids.get(key.upper())
        if found is None:
            raise UnknownIdError(f"unknown ATT&CK tactic {name!r}")
        return found

    def mtmk(self, id: str) -> MtmkTechnique:
        """The Microsoft Threat Matrix technique with this id (e.g. MS-TA9018, any case)."""
        key = id.strip().upper()
        try:
            return self._mtmk[key]
        except KeyError:
            raise UnknownIdError(
                f"unknown Microsoft Threat Matrix technique {id!r} (ids are MS-TA9001..MS-TA9041)"
            ) from None

    def matrix_tactics(self) -> tuple[Tactic, ...]:
        """The ATT&CK Containers matrix columns, in matrix order."""
        return tuple(t for t in self.tactics if t.containers)

    def parse_tag(self, tag: str) -> Technique | Tactic:
        """See the module-level `parse_tag`."""
        body = _tag_body(tag)
        upper = body.upper()
        if _TECHNIQUE_ID.fullmatch(upper):
            return self.technique(upper)
        if _TACTIC_ID.fullmatch(upper):
            return self.tactic(upper)
        if _GROUP_OR_SOFTWARE.fullmatch(body):
            raise TagError(f"{tag!r} names an ATT&CK group or software, not a technique or tactic")
        if not re.fullmatch(r"[a-z][a-z_-]*", body):
            raise TagError(f"malformed ATT&CK tag {tag!r}")
        return self.tactic(body)

    def validate_tags(self, tags: Iterable[str]) -> list[str]:
        """See the module-level `validate_tags`."""
        problems: list[str] = []
        listed_tactics: list[Tactic] = []
        listed_techniques: list[tuple[str, Technique]] = []
        for tag in tags:
            if not tag.lower().startswith(TAG_PREFIX):
                continue
            if _GROUP_OR_SOFTWARE.fullmatch(tag[len(TAG_PREFIX) :].lower()):
                continue
            try:
                item = self.parse_tag(tag)
            except (TagError, UnknownIdError) as exc:
                problems.append(f"{tag}: {exc}")
                continue
            if tag != item.tag:
                problems.append(f"{tag}: write it {item.tag} (lower case, hyphenated)")
            if isinstance(item, Tactic):
                listed_tactics.append(item)
            else:
                listed_techniques.append((tag, item))
        if listed_tactics:
            names = {t.shortname for t in listed_tactics}
            for tag, tech in listed_techniques:
                if not names.intersection(tech.tactics):
                    problems.append(
                        f"{tag}: {tech.name} is a {'/'.join(tech.tactics)} technique; "
                        f"the tags list only {', '.join(sorted(names))}"
                    )
        return problems

    def validate_mtmk(self, ids: Iterable[str]) -> list[str]:
        """See the module-level `validate_mtmk`."""
        problems: list[str] = []
        for i in ids:
            if not _MTMK_ID.fullmatch(str(i).strip().upper()):
                problems.append(f"{i}: malformed Microsoft Threat Matrix id (expected MS-TA9xxx)")
                continue
            try:
                self.mtmk(i)
            except UnknownIdError as exc:
                problems.append(f"{i}: {exc}")
        return problems


def _tag_body(tag: str) -> str:
    if not isinstance(tag, str) or not tag.lower().startswith(TAG_PREFIX):
        raise TagError(f"{tag!r} is not an ATT&CK tag (expected attack.<tactic> or attack.t<id>)")
    return tag[len(TAG_PREFIX) :].strip().lower()


def _read_json(name: str) -> Any:
    try:
        text = resources.files("mitre").joinpath("data", name).read_text(encoding="utf-8")
        return json.loads(text)
    except (OSError, ValueError) as exc:
        raise CatalogueError(f"cannot read bundled mitre/data/{name}: {exc}") from exc


@cache
def catalogue() -> Catalogue:
    """The bundled catalogue, read once per process.

    >>> cat = catalogue()
    >>> cat.version, len([t for t in cat.techniques if t.containers]), len(cat.matrix_tactics())
    ('18.1', 48, 9)
    """
    return Catalogue.from_json(_read_json("attack-containers.json"), _read_json("mtmk.json"))


def technique(id: str) -> Technique:
    """Look up a technique by ATT&CK id (case-insensitive); UnknownIdError if absent.

    >>> t = technique("t1552.007")
    >>> t.name, t.parent, t.tactics
    ('Container API', 'T1552', ('credential-access',))
    >>> t.url
    'https://attack.mitre.org/techniques/T1552/007'
    >>> technique("T1078.004").containers  # outside Containers; Microsoft's matrix maps to it
    False
    """
    return catalogue().technique(id)


def tactic(shortname: str) -> Tactic:
    """Look up a tactic by shortname (or TA id); UnknownIdError if absent.

    >>> tactic("privilege-escalation")  # doctest: +NORMALIZE_WHITESPACE
    Tactic(shortname='privilege-escalation', name='Privilege Escalation', id='TA0004',
           url='https://attack.mitre.org/tactics/TA0004/', containers=True)
    >>> tactic("TA0040").name
    'Impact'
    """
    return catalogue().tactic(shortname)


def mtmk(id: str) -> MtmkTechnique:
    """Look up a Microsoft Threat Matrix for Kubernetes technique.

    >>> m = mtmk("MS-TA9018")
    >>> m.name, m.tactics, m.attack
    ('Privileged container', ('privilege-escalation',), ('T1610',))
    """
    return catalogue().mtmk(id)


def tactics() -> tuple[Tactic, ...]:
    """Every tactic in the catalogue, in ATT&CK matrix order."""
    return catalogue().tactics


def techniques() -> tuple[Technique, ...]:
    """Every technique in the catalogue, ordered by id."""
    return catalogue().techniques


def parse_tag(tag: str) -> Technique | Tactic:
    """The technique or tactic an `attack.*` tag names.

    TagError for a tag outside the `attack.` namespace or a malformed one; UnknownIdError for a
    well-formed id the catalogue lacks.

    >>> parse_tag("attack.t1611")  # doctest: +ELLIPSIS
    Technique(id='T1611', name='Escape to Host', ...)
    >>> parse_tag("attack.defense_evasion").shortname  # legacy Sigma spelling is understood
    'defense-evasion'
    >>> parse_tag("attack.t9999")
    Traceback (most recent call last):
    ...
    mitre.errors.UnknownIdError: unknown ATT&CK technique 'T9999' (not in bundled ATT&CK v18.1)
    """
    return catalogue().parse_tag(tag)


def validate_tags(tags: Iterable[str]) -> list[str]:
    """Problems with a rule's `attack.*` tags, one sentence each; empty when they are fine.

    Reports unknown technique ids and tactics, malformed tags, spellings other than the
    canonical lower-case hyphenated tag, and (a lint) a technique none of whose tactics is
    among the tactics the rule lists. Tags in other namespaces and ATT&CK group/software tags
    are ignored.

    >>> validate_tags(["attack.privilege-escalation", "attack.t1611", "cve.2024-1234"])
    []
    >>> validate_tags(["attack.t1611", "attack.priv-esc"])
    ["attack.priv-esc: unknown ATT&CK tactic 'priv-esc'"]
    """
    return catalogue().validate_tags(tags)


def validate_mtmk(ids: Iterable[str]) -> list[str]:
    """Problems with a rule's `klaxon.mtmk` ids; empty when they are fine.

    >>> for problem in validate_mtmk(["MS-TA9018", "MS-TA9032", "TA9001"]):
    ...     print(problem)
    MS-TA9032: unknown Microsoft Threat Matrix technique 'MS-TA9032' (ids are MS-TA9001..MS-TA9041)
    TA9001: malformed Microsoft Threat Matrix id (expected MS-TA9xxx)
    """
    return catalogue().validate_mtmk(ids)
