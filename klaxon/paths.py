"""How the command line prints file paths: relative to the working directory when under it.

The rule loader does the same for rule and list files (`detections.loader`), so problems,
``klaxon rules list`` and the messages of the other commands name files the same way.
"""

from __future__ import annotations

import os
from pathlib import Path


def display_path(path: str | os.PathLike[str]) -> str:
    """``path`` relative to the working directory if it lies under it, else as given.

    >>> display_path(Path.cwd() / "out" / "layer.json") == os.path.join("out", "layer.json")
    True
    >>> display_path("/nowhere/else.json")
    '/nowhere/else.json'
    """
    given = Path(path)
    try:
        return str(given.resolve().relative_to(Path.cwd().resolve()))
    except (OSError, ValueError):
        return str(path)
