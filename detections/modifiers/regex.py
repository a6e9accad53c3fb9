"""``|re``: RE2 regular expressions (linear time), compiled here and nowhere else."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import re2

from detections.matchers import MatchSpecError, Predicate, cached_texts, combine_texts, memoize
from detections.matchers import any_text as any_text_pred
from detections.modifiers.base import MatchType, Spec, Target

#: Longest text a ``|re`` pattern is run against (RE2 is linear, this bounds the constant).
MAX_REGEX_INPUT = 65_536

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False


def compile_re2(source: str, index: int | None = None, shown: Any = None) -> Any:
    """Compile an RE2 expression; MatchSpecError (at value ``index``) when it is not valid.

    The one place regexes are compiled: rule patterns and the wildcard patterns alike.

    >>> compile_re2("a+").search("caab") is not None
    True
    >>> compile_re2("(", 0)
    Traceback (most recent call last):
    detections.matchers.MatchSpecError: regex '(' is not valid RE2 syntax: missing ): (
    """
    try:
        return re2.compile(source, _OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        pattern = source if shown is None else shown
        raise MatchSpecError(
            f"regex {pattern!r} is not valid RE2 syntax: {detail}", index
        ) from None


def compile_pattern(value: Any, flags: str, index: int | None = None) -> Any:
    """A rule's ``|re`` value with its flags (``i``, ``m``, ``s``) compiled."""
    if not isinstance(value, str):
        raise MatchSpecError(f"'re' needs a string pattern, got {value!r}", index)
    return compile_re2((f"(?{flags})" if flags else "") + value, index, value)


def regex_test(regex: Any) -> Callable[[str], bool]:
    """Whether the regex finds a match in (the first MAX_REGEX_INPUT characters of) a text."""
    return lambda t: regex.search(t[:MAX_REGEX_INPUT]) is not None


def regex_any(regexes: Sequence[Any]) -> Callable[[str], bool]:
    """A memoized test: any of ``regexes`` finds a match."""
    tests = [regex_test(r) for r in regexes]
    return memoize(lambda t: any(test(t) for test in tests))


class Regex(MatchType):
    """``|re``: the value is an RE2 pattern searched in the field's (case-kept) texts."""

    cased = False

    def compile(self, target: Target, spec: Spec, values: Sequence[Any]) -> Predicate:
        regexes = [compile_pattern(v, spec.regex_flags, i) for i, v in enumerate(values)]
        if spec.match_all:
            texts = cached_texts(target.path, False)
            return combine_texts(texts, [memoize(regex_test(r)) for r in regexes], True)
        return any_text_pred(target.path, regex_any(regexes))

    def text_test(self, spec: Spec, values: Sequence[Any]) -> Callable[[str], bool] | None:
        chosen = values[:1] if spec.match_all else values
        return regex_any([compile_pattern(v, spec.regex_flags) for v in chosen])
