"""Hot reload of rules and lists: rebuild the engine when a file changes, keep it if broken.

`EngineHolder` owns the engine the detect agent reads (one attribute read per message, so a
swap is atomic for the event loop). `RuleWatcher.check` is called by a Faust timer: it
fingerprints the rule and list files (``stat`` only, in a thread), and on a change builds a
new engine in a thread (`asyncio.to_thread`), then swaps it in. A file with mistakes logs
every problem and leaves the running engine untouched, until the files change again.

>>> import tempfile
>>> d = Path(tempfile.mkdtemp())
>>> _ = (d / "a.yml").write_text("x: 1")
>>> fp = fingerprint([d])
>>> [Path(p).name for p, _, _ in fp]
['a.yml']
>>> _ = (d / "b.yaml").write_text("y: 2")
>>> fingerprint([d]) != fp
True
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detections.selection import RuleSelection

__all__ = [
    "EngineHolder",
    "Fingerprint",
    "RuleWatcher",
    "build_engine",
    "engine_builder",
    "fingerprint",
    "watched_paths",
]

log = logging.getLogger("klaxon.reload")

Fingerprint = tuple[tuple[str, int, int], ...]


def watched_paths(rules: Sequence[Path], lists: Sequence[Path]) -> list[Path]:
    """Files and folders whose change means a reload: the rules (default: the packaged pack),
    the packaged lists and the user's lists."""
    import detections

    package = Path(detections.__file__).resolve().parent
    return [*(rules or [package / "rules"]), package / "lists", *lists]


def fingerprint(paths: Iterable[Path]) -> Fingerprint:
    """``(path, mtime_ns, size)`` of every ``*.yml``/``*.yaml`` under ``paths`` (sorted);
    a missing path appears with ``-1`` so that its disappearance is a change too."""
    from detections.loader import yaml_files

    out: list[tuple[str, int, int]] = []
    for path in paths:
        files = yaml_files(path) if path.is_dir() else [path]
        for file in files:
            try:
                st = file.stat()
            except OSError:
                out.append((str(file), -1, -1))
                continue
            if file.is_file():
                out.append((str(file), st.st_mtime_ns, st.st_size))
    return tuple(sorted(out))


def build_engine(
    rules: Sequence[Path], lists: Sequence[Path], selection: RuleSelection | None = None
) -> tuple[Any, int]:
    """Load the rules (default: packaged pack) and lists, keep those ``selection`` enables
    (default: all but deprecated and unsupported ones) and compile an engine.

    Returns ``(engine, rule count)``; raises `detections.RuleLoadError` listing every problem.
    """
    from detections import Engine, load_rules
    from detections.selection import RuleSelection

    ruleset = load_rules([os.fspath(p) for p in rules] or None, [os.fspath(p) for p in lists])
    selected = (selection or RuleSelection()).apply(ruleset, _new_terms_feeds())
    if selected.disabled:
        log.info(
            "%d of %d rules and correlations disabled by the rule selection",
            selected.disabled,
            len(selected.decisions),
        )
    return Engine(selected.ruleset), len(selected.ruleset.rules)


def _new_terms_feeds() -> dict[str, tuple[str, ...]]:
    """The packaged new terms detectors and the base rules they read (kept when disabled)."""
    from detections.stateful.new_terms import load_new_terms

    return {spec.title: spec.rules for spec in load_new_terms()}


def engine_builder(
    selection: RuleSelection | None,
) -> Callable[[Sequence[Path], Sequence[Path]], tuple[Any, int]]:
    """`build_engine` with ``selection`` applied, for `RuleWatcher` (hot reload keeps it)."""

    def build(rules: Sequence[Path], lists: Sequence[Path]) -> tuple[Any, int]:
        return build_engine(rules, lists, selection)

    return build


@dataclass
class EngineHolder:
    """The current engine, its rule count and how many times it was replaced."""

    engine: Any
    rules: int
    generation: int = 0

    def swap(self, engine: Any, rules: int) -> None:
        """Replace the engine (a single attribute store: readers see old or new, never half)."""
        self.engine, self.rules = engine, rules
        self.generation += 1


class RuleWatcher:
    """Rebuilds ``holder``'s engine when the watched files change; keeps it if they are broken."""

    def __init__(
        self,
        holder: EngineHolder,
        rules: Sequence[Path],
        lists: Sequence[Path],
        *,
        builder: Callable[[Sequence[Path], Sequence[Path]], tuple[Any, int]] = build_engine,
        on_result: Callable[[bool], None] | None = None,
        seen: Fingerprint | None = None,
    ) -> None:
        self.holder = holder
        self.rules = list(rules)
        self.lists = list(lists)
        self.paths = watched_paths(self.rules, self.lists)
        self._builder = builder
        self._on_result = on_result
        self._seen = seen

    async def prime(self) -> None:
        """Remember the files as they are now (the engine in ``holder`` was built from them)."""
        self._seen = await asyncio.to_thread(fingerprint, self.paths)

    async def check(self) -> bool:
        """Reload if anything changed since the last check; True if a new engine is in use."""
        from detections import RuleLoadError

        current = await asyncio.to_thread(fingerprint, self.paths)
        if current == self._seen:
            return False
        self._seen = current
        try:
            engine, count = await asyncio.to_thread(self._builder, self.rules, self.lists)
        except RuleLoadError as exc:
            problems = getattr(exc, "problems", ()) or (str(exc),)
            log.error(
                "rules changed but do not load (%d problems); keeping the running engine",
                len(problems),
            )
            for problem in problems:
                log.error("rule problem: %s", problem)
            self._report(False)
            return False
        except Exception:
            log.exception("rules changed but the engine could not be built; keeping it")
            self._report(False)
            return False
        self.holder.swap(engine, count)
        log.warning("rules reloaded: %d rules (generation %d)", count, self.holder.generation)
        self._report(True)
        return True

    def _report(self, ok: bool) -> None:
        if self._on_result is not None:
            self._on_result(ok)
