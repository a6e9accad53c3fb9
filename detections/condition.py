"""Sigma condition expressions: a tokenizer and a hand-written recursive-descent parser.

Grammar (lowest precedence first)::

    expr    := and_expr ('or' and_expr)*
    and_expr:= unary ('and' unary)*
    unary   := 'not' unary | '(' expr ')' | quant | NAME
    quant   := ('all' | 'any' | INT) 'of' ('them' | PATTERN)

Quantifiers are expanded against the rule's selection names at parse time, so the tree only
holds :class:`Ref`, :class:`Not`, :class:`And`, :class:`Or` and :class:`AtLeast`.

>>> parse_condition("sel and not 1 of filter_*", ["sel", "filter_a", "filter_b"])
And(items=(Ref(name='sel'), Not(item=Or(items=(Ref(name='filter_a'), Ref(name='filter_b'))))))
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass

from detections.errors import suggest


@dataclass(frozen=True, slots=True)
class Ref:
    """A named selection."""

    name: str


@dataclass(frozen=True, slots=True)
class Not:
    """Negation."""

    item: Node


@dataclass(frozen=True, slots=True)
class And:
    """Every item holds."""

    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    """At least one item holds."""

    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class AtLeast:
    """At least ``count`` of the items hold (``2 of selection_*``)."""

    count: int
    items: tuple[Node, ...]


Node = Ref | Not | And | Or | AtLeast


class ConditionSyntaxError(ValueError):
    """A condition does not parse; ``column`` is the 1-based offset inside the condition text."""

    def __init__(self, message: str, column: int, suggestion: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.column = column
        self.suggestion = suggestion


_TOKEN = re.compile(r"\s*(?:(\()|(\))|([A-Za-z0-9_*?.\-]+)|(\S))")
_KEYWORDS = {"and", "or", "not", "of", "them", "all", "any"}


def _tokenize(text: str) -> list[tuple[str, int]]:
    tokens: list[tuple[str, int]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            break
        if m.group(4):
            raise ConditionSyntaxError(f"unexpected character {m.group(4)!r}", m.start(4) + 1)
        group = next(i for i in (1, 2, 3) if m.group(i))
        tokens.append((m.group(group), m.start(group) + 1))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str, names: Sequence[str]) -> None:
        self.text = text
        self.names = list(names)
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self) -> str | None:
        return self.tokens[self.i][0].lower() if self.i < len(self.tokens) else None

    def column(self) -> int:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else len(self.text) + 1

    def take(self) -> tuple[str, int]:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def parse(self) -> Node:
        if not self.tokens:
            raise ConditionSyntaxError("empty condition", 1)
        node = self.expr()
        if self.i < len(self.tokens):
            word, col = self.tokens[self.i]
            raise ConditionSyntaxError(f"unexpected {word!r}; expected 'and', 'or' or end", col)
        return node

    def expr(self) -> Node:
        items = [self.and_expr()]
        while self.peek() == "or":
            self.take()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self) -> Node:
        items = [self.unary()]
        while self.peek() == "and":
            self.take()
            items.append(self.unary())
        return items[0] if len(items) == 1 else And(tuple(items))

    def unary(self) -> Node:
        word = self.peek()
        col = self.column()
        if word is None:
            raise ConditionSyntaxError("condition ends too early; expected a selection", col)
        if word == "not":
            self.take()
            return Not(self.unary())
        if word == "(":
            self.take()
            node = self.expr()
            if self.peek() != ")":
                raise ConditionSyntaxError("missing ')'", self.column())
            self.take()
            return node
        if word == ")":
            raise ConditionSyntaxError("unexpected ')'", col)
        if word in ("all", "any") or word.isdigit():
            after = self.tokens[self.i + 1][0].lower() if self.i + 1 < len(self.tokens) else None
            if after == "of":
                return self.quantifier()
        raw, col = self.take()
        if word in _KEYWORDS:
            raise ConditionSyntaxError(f"unexpected keyword {raw!r}", col)
        if raw not in self.names:
            raise ConditionSyntaxError(
                f"unknown selection {raw!r}", col, suggest(raw, self.names) or None
            )
        return Ref(raw)

    def quantifier(self) -> Node:
        count_word, col = self.take()
        self.take()  # 'of'
        if self.peek() is None:
            raise ConditionSyntaxError("expected 'them' or a selection pattern after 'of'", col)
        target, tcol = self.take()
        if target.lower() == "them":
            matched = [n for n in self.names if not n.startswith("_")]
        else:
            matched = [n for n in self.names if fnmatch.fnmatchcase(n, target)]
            if not matched:
                raise ConditionSyntaxError(
                    f"pattern {target!r} matches no selection", tcol, suggest(target, self.names)
                )
        refs: tuple[Node, ...] = tuple(Ref(n) for n in matched)
        lowered = count_word.lower()
        if lowered == "all":
            return refs[0] if len(refs) == 1 else And(refs)
        count = 1 if lowered == "any" else int(count_word)
        if count < 1:
            raise ConditionSyntaxError(f"'{count_word} of' can never be meaningful", col)
        if count == 1:
            return refs[0] if len(refs) == 1 else Or(refs)
        return AtLeast(count, refs)


def parse_condition(text: str, names: Sequence[str]) -> Node:
    """Parse ``text`` against the selection ``names`` of one rule (raises ConditionSyntaxError)."""
    return _Parser(text, names).parse()


def refs(node: Node) -> set[str]:
    """Every selection name a condition tree mentions.

    >>> sorted(refs(parse_condition("a or not (b and c)", ["a", "b", "c"])))
    ['a', 'b', 'c']
    """
    if isinstance(node, Ref):
        return {node.name}
    if isinstance(node, Not):
        return refs(node.item)
    out: set[str] = set()
    for item in node.items:
        out |= refs(item)
    return out


def evaluate(node: Node, truth: dict[str, bool]) -> bool:
    """Evaluate a tree over known selection results (used for explanations, not the hot path).

    >>> evaluate(parse_condition("a and not b", ["a", "b"]), {"a": True, "b": False})
    True
    """
    if isinstance(node, Ref):
        return truth[node.name]
    if isinstance(node, Not):
        return not evaluate(node.item, truth)
    if isinstance(node, And):
        return all(evaluate(i, truth) for i in node.items)
    if isinstance(node, Or):
        return any(evaluate(i, truth) for i in node.items)
    return sum(evaluate(i, truth) for i in node.items) >= node.count
