"""The import diagram of docs/architecture.md, checked on the source (every import statement,
function-local ones included, found with `ast`).

In particular `pipeline` and `replay` are siblings: neither imports the other. What needs
both (``klaxon demo``/``up``, ``klaxon replay`` with the pipeline's settings) lives in
`klaxon/`, the command-line layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: Which internal packages each package may import (docs/architecture.md, "Packages and the
#: import direction").
ALLOWED: dict[str, set[str]] = {
    "schemas": set(),
    "mitre": set(),
    "detections": {"schemas", "mitre"},
    "pipeline": {"schemas", "mitre", "detections"},
    "replay": {"schemas", "mitre", "detections"},
    "klaxon": {"schemas", "mitre", "detections", "pipeline", "replay"},
}


def internal_imports(package: str) -> list[tuple[str, int, str]]:
    """(file, line, imported top-level package) for every import of another internal package."""
    found = []
    for path in sorted((REPO / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in ALLOWED and top != package:
                    found.append((str(path.relative_to(REPO)), node.lineno, top))
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_the_layers_below(package: str) -> None:
    """No package imports one it may not (an upward import or a sibling's)."""
    wrong = [
        f"{file}:{line}: imports {top}"
        for file, line, top in internal_imports(package)
        if top not in ALLOWED[package]
    ]
    assert not wrong, "\n".join(wrong)


def test_pipeline_and_replay_do_not_import_each_other() -> None:
    """The rule this file exists for, spelled out (and the scan really sees imports)."""
    assert not [i for i in internal_imports("pipeline") if i[2] == "replay"]
    assert not [i for i in internal_imports("replay") if i[2] == "pipeline"]
    assert {top for _, _, top in internal_imports("klaxon")} >= {"pipeline", "replay"}
