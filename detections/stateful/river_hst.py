"""river's ``HalfSpaceTrees`` class without the cost of river's package imports.

``river.anomaly``, ``river.tree`` and ``river.utils`` import every model they hold (with
numpy, SciPy and scikit-learn on the way: about 105 MB of RSS and a second of start-up); the
HST needs three modules of them. `hst_class` loads those alone. Kept apart from
`detections.stateful.anomaly` because it edits `sys.modules` through a module subclass, which
that (compiled, `schemas.native`) module cannot hold.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from river.anomaly import HalfSpaceTrees

__all__ = ["hst_class", "padded_nodes"]


class _LazyModule(types.ModuleType):
    """A package placeholder: empty while it stands in `sys.modules`, the real package on
    first attribute use once it has left (`import_module` then imports it for real)."""

    def __getattr__(self, attr: str) -> Any:
        if sys.modules.get(self.__name__) is self or attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(importlib.import_module(self.__name__), attr)


#: river packages whose ``__init__`` the HST does not need: ``river.anomaly`` and
#: ``river.tree`` import every model they hold, ``river.utils`` numpy, SciPy and narwhals;
#: with scikit-learn pulled in on the way, about 105 MB of RSS and a second of start-up.
_RIVER_SKIPPED = ("river.utils", "river.tree", "river.anomaly")
_HST_CLASS: list[tuple[type[HalfSpaceTrees], types.ModuleType]] = []  # with river.tree.padded
_HST_LOCK = threading.Lock()


def hst_class() -> type[HalfSpaceTrees]:
    """river's ``HalfSpaceTrees`` class, loaded from its three modules (``river.anomaly.hst``,
    ``river.tree.padded``, ``river.tree.base``) without the packages' ``__init__`` (about
    4 MB instead of 110 MB). A private load: the packages stand in `sys.modules` as
    placeholders only while it runs, and it leaves no ``river.anomaly``/``river.tree``
    module behind (a later ``import river.anomaly`` is the real package, with its own copy
    of the class). Falls back to the plain import if river's layout changed. Thread-safe
    (the worker preloads it).

    >>> hst_class().__name__
    'HalfSpaceTrees'
    """
    return _river()[0]


def padded_nodes() -> tuple[Any, Any]:
    """river's ``PaddedBranch`` and ``PaddedLeaf`` (the HST's nodes), from the modules
    `hst_class` loaded."""
    padded = _river()[1]
    return padded.PaddedBranch, padded.PaddedLeaf


def _river() -> tuple[type[HalfSpaceTrees], types.ModuleType]:
    with _HST_LOCK:
        if not _HST_CLASS:
            _HST_CLASS.append(_load_hst())
        return _HST_CLASS[0]


def _load_hst() -> tuple[type[HalfSpaceTrees], types.ModuleType]:
    loaded = sys.modules.get("river.anomaly")
    if loaded is not None and not isinstance(loaded, _LazyModule):
        return loaded.HalfSpaceTrees, importlib.import_module("river.tree.padded")
    before = set(sys.modules)
    try:
        for name in _RIVER_SKIPPED:
            spec = importlib.util.find_spec(name)
            if name in sys.modules or spec is None or not spec.submodule_search_locations:
                continue
            module = _LazyModule(name)
            module.__path__ = list(spec.submodule_search_locations)
            module.__spec__ = spec
            sys.modules[name] = module
        cls: type[HalfSpaceTrees] = importlib.import_module("river.anomaly.hst").HalfSpaceTrees
        padded = sys.modules["river.tree.padded"]
    except (ImportError, KeyError):
        cls = None  # type: ignore[assignment]
    finally:
        for name in set(sys.modules) - before:
            if name.startswith(_RIVER_SKIPPED):
                del sys.modules[name]
    if cls is None:
        from river.anomaly import HalfSpaceTrees

        return HalfSpaceTrees, importlib.import_module("river.tree.padded")
    return cls, padded
