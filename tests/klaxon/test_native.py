"""``klaxon native``: the mypyc build, and compiled modules that behave as their sources."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from klaxon.native import NativeBuildError, build, missing_tools, mypy_config
from schemas.native import COMPLETE, build_dir, in_use

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "replay" / "sample" / "cluster-sample.jsonl.gz"


def test_the_build_reads_mypy_settings_from_the_project_without_its_packages() -> None:
    config = mypy_config(ROOT)
    assert config.startswith("[mypy]\n")
    assert "strict = True" in config
    assert "packages" not in config
    assert "[mypy-faust.*,mode.*,aiokafka.*" in config
    assert "ignore_missing_imports = True" in config


def test_without_the_tools_the_build_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CC", "no-such-compiler-here")
    monkeypatch.setenv("KLAXON_NATIVE_DIR", str(tmp_path))
    with pytest.raises(NativeBuildError, match="a C compiler"):
        build(ROOT, modules=("schemas/keys.py",))
    assert list(tmp_path.iterdir()) == []  # nothing half-built left behind


@pytest.mark.slow
@pytest.mark.skipif(bool(missing_tools()), reason="no C compiler or Python headers")
def test_a_build_compiles_its_modules_and_replaces_older_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A two-module project, built twice: the second build (after an edit) is the only one
    left, and an interpreter imports the compiled modules through `extend`. (Two: mypyc
    names a one-module group's files inconsistently in multi-file mode.)"""
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        '[tool.mypy]\nstrict = true\npackages = ["pkg"]\n'
        '[[tool.mypy.overrides]]\nmodule = ["schemas.*"]\nignore_missing_imports = true\n'
    )
    mods = ("pkg/fast.py", "pkg/other.py")
    (root / "pkg" / "other.py").write_text("def plus(n: int) -> int:\n    return n + 1\n")
    (root / "pkg" / "__init__.py").write_text(
        "from pathlib import Path\nfrom schemas.native import extend\n"
        f"__path__ = extend(__name__, __path__, root=Path({str(root)!r}), modules={mods!r})\n"
    )
    source = "def twice(n: int) -> int:\n    return n * {k}\n"
    (root / "pkg" / "fast.py").write_text(source.format(k=2))
    first = build(root, modules=mods, jobs=1)
    (root / "pkg" / "fast.py").write_text(source.format(k=3))
    second = build(root, modules=mods, jobs=1)
    assert first != second and not first.exists()
    assert (second / COMPLETE).is_file()
    assert build(root, modules=mods) == second  # current: reused
    probe = "import pkg.fast as f, pkg.other as o; print(f.__file__.endswith('.py'), f.twice(7))"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": f"{root}:{ROOT}"},
    ).stdout
    assert out.split() == ["False", "21"]


def _replay(native: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "klaxon", "replay", "--offline", "--json", str(SAMPLE)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "KLAXON_NATIVE": native},
    )
    return done.stdout


def test_ci_tests_the_compiled_modules() -> None:
    """CI must test what ships: ``./dev test`` builds them there, or fails."""
    if os.environ.get("CI") != "true":
        pytest.skip("outside CI the build is optional")
    assert in_use() is not None, f"no current build at {build_dir(ROOT)}"


@pytest.mark.skipif(in_use() is None, reason="no current build (klaxon native build)")
def test_compiled_modules_give_the_sources_alerts_byte_for_byte() -> None:
    """The bundled sample through normalise, redact, the engine, the stateful families and
    the alerts: the same JSON, ids included, compiled or not."""
    compiled, sources = _replay("1"), _replay("0")
    assert compiled.count("\n") > 10
    assert compiled == sources


_MATCHES = """
import hashlib, sys, orjson
from bench.engine import PACKAGED_RULES, SIGMAHQ, make_events
from detections import Engine, load_rules
paths = [PACKAGED_RULES, *([SIGMAHQ] if SIGMAHQ.is_dir() else [])]
engine = Engine(load_rules(paths))
digest, count = hashlib.sha256(), 0
for mix in ("realistic", "bodies", "write-heavy"):
    for i, event in enumerate(make_events(4000, seed=11, mix=mix)):
        for m in engine.evaluate(event):
            count += 1
            digest.update(orjson.dumps([mix, i, m.rule.id, m.matched_fields], default=str))
print(count, digest.hexdigest())
"""


@pytest.mark.skipif(in_use() is None, reason="no current build (klaxon native build)")
def test_compiled_engine_finds_the_sources_matches_on_the_bench_mixes() -> None:
    """Every match (rule and evidence) of the full pack on 12,000 generated events, bodies
    and pod specs included, compiled or not."""
    runs = [
        subprocess.run(
            [sys.executable, "-c", _MATCHES],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            env={**os.environ, "KLAXON_NATIVE": native},
        ).stdout
        for native in ("1", "0")
    ]
    assert int(runs[0].split()[0]) > 1000
    assert runs[0] == runs[1]


@pytest.mark.skipif(in_use() is None, reason="no current build: the doctests ran as sources")
def test_the_compiled_modules_doctests_pass_as_sources() -> None:
    """Compiled, doctest finds fewer of these modules' examples (methods of compiled
    classes): run every one of them from the sources."""
    from schemas.native import MODULES

    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *MODULES],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "KLAXON_NATIVE": "0"},
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout
