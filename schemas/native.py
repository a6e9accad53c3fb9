"""Compiled modules: the hot path's modules built with mypyc, used only while they are current.

The modules in `MODULES` are plain, mypy-strict Python. ``klaxon native build``
(`klaxon.native`; ``./dev test`` and ``./dev bench`` run it) compiles them with mypyc, which
turns typed Python into C: the engine, the normaliser, redaction and the stateful families
run about 1.5-2x faster. The build goes to its own directory, named by the digest of every
compiled module's source (`build_tag`), never next to the sources. Each package holding a
compiled module calls `extend` first thing, which puts that directory's copy of the package
first on the package's ``__path__`` when the directory exists: an import then finds the
compiled module before the source. Change one source and the tag changes, the directory is
not there, and the source runs, so a compiled module is never stale. ``KLAXON_NATIVE=0``
runs the sources regardless (to compare, or to debug with a Python debugger).

Nothing here imports Klaxon (`schemas` imports nothing internal) or mypy.

>>> build_tag(Path(__file__).parents[1]).startswith(sys.implementation.cache_tag + "-")
True
>>> extend("no.such.package", ["/src/x"], root=Path("/nonexistent"))
['/src/x']
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from functools import cache
from pathlib import Path

__all__ = ["MODULES", "build_dir", "build_tag", "extend", "in_use", "native_root"]

#: The modules mypyc compiles, each a file under the repository root. All of them, or
#: none: compiled modules call each other's compiled code directly.
MODULES: tuple[str, ...] = (
    "detections/alert.py",
    "detections/engine.py",
    "detections/fields.py",
    "detections/guards.py",
    "detections/index.py",
    "detections/matchers.py",
    "detections/stateful/anomaly.py",
    "detections/stateful/correlation.py",
    "detections/stateful/new_terms.py",
    "detections/stateful/timeutil.py",
    "pipeline/processing.py",
    "pipeline/routing.py",
    "pipeline/stateful/anomaly.py",
    "pipeline/stateful/correlations.py",
    "pipeline/stateful/new_terms.py",
    "schemas/keys.py",
    "schemas/normalize.py",
    "schemas/redact.py",
)

#: Written last by the build: a directory without it is a build that did not finish.
COMPLETE = "COMPLETE"


def native_root(root: Path) -> Path:
    """Where builds go: ``KLAXON_NATIVE_DIR``, else ``.cache/native`` under ``root``."""
    configured = os.environ.get("KLAXON_NATIVE_DIR")
    return Path(configured) if configured else root / ".cache" / "native"


def build_tag(root: Path, modules: tuple[str, ...] = MODULES) -> str:
    """The interpreter's tag and the digest of the compiled modules' sources (missing files
    count as empty): a build is valid for exactly these sources on this interpreter."""
    digest = hashlib.sha256()
    for name in modules:
        digest.update(name.encode() + b"\0")
        with contextlib.suppress(OSError):
            digest.update((root / name).read_bytes())
        digest.update(b"\0")
    return f"{sys.implementation.cache_tag}-{digest.hexdigest()[:20]}"


def build_dir(root: Path, modules: tuple[str, ...] = MODULES) -> Path:
    """The directory a build of the current sources under ``root`` lives in."""
    return native_root(root) / build_tag(root, modules)


@cache
def _current(root: Path, modules: tuple[str, ...]) -> Path | None:
    if os.environ.get("KLAXON_NATIVE", "1") == "0":
        return None
    found = build_dir(root, modules)
    return found if (found / COMPLETE).is_file() else None


def in_use(root: Path | None = None, modules: tuple[str, ...] = MODULES) -> Path | None:
    """The build this process imports compiled modules from (None: it runs the sources)."""
    return _current(root or _ROOT, modules)


def extend(
    package: str,
    path: list[str],
    *,
    root: Path | None = None,
    modules: tuple[str, ...] = MODULES,
) -> list[str]:
    """``package``'s ``__path__`` with the current build's copy of it first, if there is one
    (its runtime library goes on ``sys.path``, last, so it shadows nothing)."""
    found = _current(root or _ROOT, modules)
    if found is None:
        return path
    sub = found.joinpath(*package.split("."))
    if not sub.is_dir():
        return path
    if str(found) not in sys.path:
        sys.path.append(str(found))
    return [str(sub), *path]


_ROOT = Path(__file__).resolve().parents[1]
