"""The detections package's one exception hierarchy, plus the problem/lint records it carries.

Every rule-authoring mistake becomes a :class:`Problem` with a file position and the dotted key
path inside the document, so an editor can jump to it and a reviewer can read it:

>>> print(Problem("r.yml", 12, 9, "detection.sel.verb|contians", "unknown modifier 'contians'",
...               "contains"))
r.yml:12:9: detection.sel.verb|contians: unknown modifier 'contians' (did you mean 'contains'?)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One mistake in a rule or list file; ``line``/``col`` are 1-based (0 when unknown)."""

    file: str
    line: int
    col: int
    key_path: str
    message: str
    suggestion: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        key = f" {self.key_path}:" if self.key_path else ""
        hint = f" (did you mean '{self.suggestion}'?)" if self.suggestion else ""
        return f"{where}:{key} {self.message}{hint}"


@dataclass(frozen=True, slots=True)
class Lint(Problem):
    """A rule that loads but is probably wrong (fatal only with ``--strict``)."""

    code: str = "lint"

    def __str__(self) -> str:
        return f"{Problem.__str__(self)} [{self.code}]"


class DetectionError(Exception):
    """Root of every error raised by the detections package."""


class RuleLoadError(DetectionError):
    """Rules or lists could not be loaded; ``problems`` lists every mistake found in one run."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(sorted(problems, key=_problem_order))
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} in rules"
        super().__init__("\n".join([head, *(str(p) for p in self.problems)]))


class RuleNotFoundError(DetectionError):
    """A rule named on the command line (by id, name or title) is not in the rule set."""


class EventFileError(DetectionError):
    """An event or log file given to the CLI could not be read or parsed."""


def _problem_order(p: Problem) -> tuple[str, int, int, str]:
    return (p.file, p.line, p.col, p.message)


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """The closest of ``choices`` to a misspelt ``word``, or None when nothing is close.

    >>> suggest("levle", ["level", "title", "status"])
    'level'
    >>> suggest("zzz", ["level"]) is None
    True
    """
    pool = [c for c in choices if c != word]
    found = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    if not found:
        lowered = {c.lower(): c for c in pool}
        if word.lower() in lowered:
            return lowered[word.lower()]
        return None
    return found[0]
