"""`schemas.native`: a build is used only for the sources it was built from."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from schemas.native import COMPLETE, MODULES, build_dir, build_tag, extend

ROOT = Path(__file__).resolve().parents[2]
MODS = ("pkg/fast.py",)


def _tree(root: Path, source: str = "X = 1\n") -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "fast.py").write_text(source)
    return root


def _built(root: Path, *, complete: bool = True) -> Path:
    found = build_dir(root, MODS)
    (found / "pkg").mkdir(parents=True)
    if complete:
        (found / COMPLETE).write_text("test\n")
    return found


def test_every_compiled_module_exists() -> None:
    missing = [m for m in MODULES if not (ROOT / m).is_file()]
    assert missing == []


def test_compiled_modules_do_not_find_files_next_to_themselves() -> None:
    """A compiled module's ``__file__`` is in the build directory: data files are found
    from the (never compiled) package ``__init__`` instead."""
    own = re.compile(r"(?<![.\w])__file__")  # the module's own, not a package's
    users = [m for m in MODULES if own.search((ROOT / m).read_text())]
    assert users == []


def test_the_tag_names_the_interpreter_and_changes_with_any_source(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    before = build_tag(root, MODS)
    assert before.startswith(sys.implementation.cache_tag + "-")
    assert build_tag(root, MODS) == before  # stable
    (root / "pkg" / "fast.py").write_text("X = 2\n")
    assert build_tag(root, MODS) != before


def test_a_complete_build_comes_first_on_the_package_path(tmp_path: Path) -> None:
    root = _tree(tmp_path / "a")
    found = _built(root)
    path = extend("pkg", ["/src/pkg"], root=root, modules=MODS)
    assert path == [str(found / "pkg"), "/src/pkg"]
    assert sys.path[-1] == str(found)  # its runtime library, behind everything else
    sys.path.remove(str(found))


def test_an_unfinished_build_is_not_used(tmp_path: Path) -> None:
    root = _tree(tmp_path / "b")
    _built(root, complete=False)
    assert extend("pkg", ["/src/pkg"], root=root, modules=MODS) == ["/src/pkg"]


def test_a_build_of_other_sources_is_not_used(tmp_path: Path) -> None:
    root = _tree(tmp_path / "c")
    _built(root)
    (root / "pkg" / "fast.py").write_text("X = 'changed'\n")  # after the build
    assert extend("pkg", ["/src/pkg"], root=root, modules=MODS) == ["/src/pkg"]


def test_klaxon_native_0_runs_the_sources(tmp_path: Path) -> None:
    """In a fresh interpreter: the switch is read once, when the first package is imported."""
    root = _tree(tmp_path / "d")
    _built(root)
    code = (
        "from pathlib import Path; from schemas.native import extend;"
        f"print(extend('pkg', ['/src/pkg'], root=Path({str(root)!r}), modules={MODS!r}))"
    )
    for switch, first in (("0", "/src/pkg"), ("1", str(build_dir(root, MODS) / "pkg"))):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            env={"KLAXON_NATIVE": switch, "PATH": "/usr/bin:/bin"},
        ).stdout
        assert out.startswith(f"['{first}'"), out


HOLDERS = sorted({m.rsplit("/", 1)[0].replace("/", ".") for m in MODULES})


@pytest.mark.parametrize("package", HOLDERS)
def test_packages_with_compiled_modules_extend_their_path(package: str) -> None:
    """Each package that holds a compiled module asks `extend` (else its build is ignored)."""
    init = ROOT.joinpath(*package.split("."), "__init__.py").read_text()
    assert "__path__ = extend(__name__, __path__)" in init
