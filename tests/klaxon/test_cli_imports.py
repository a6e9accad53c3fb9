"""Fast commands: `klaxon --help`, `klaxon status` and `klaxon rules validate` never import the
heavy libraries (the liveness probe runs `klaxon status` with a timeout of a few seconds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from klaxon.cli import COMMANDS, build_parser

HEAVY = ("faust", "river", "sklearn", "scipy")
RULE = Path(__file__).resolve().parents[2] / "detections" / "rules" / "privileged-container.yml"

# Runs the command line in a fresh interpreter, then prints the top-level modules it loaded.
PROBE = """
import json, sys
from klaxon.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
print(json.dumps({"code": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}),
      file=sys.stderr)
"""


def loaded_by(*argv: str) -> tuple[object, set[str]]:
    """(exit code, top-level modules imported) of ``klaxon argv`` in a new interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=60
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["code"], set(report["modules"])


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["status", "--help"],
        ["status", "/nonexistent/klaxon-status.json"],
        ["rules", "validate"],
        ["rules", "validate", str(RULE)],
    ],
    ids=" ".join,
)
def test_light_commands_do_not_import_heavy_libraries(argv: list[str]) -> None:
    """None of Faust, river, scikit-learn, SciPy is imported (each costs ~0.2-1 s)."""
    code, modules = loaded_by(*argv)
    assert code in (0, 1)  # help exits 0; the missing status file is a failure, not a crash
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def test_status_imports_no_other_package() -> None:
    """`klaxon status` loads only the pipeline's command module, not the rule engine."""
    _, modules = loaded_by("status", "/nonexistent/klaxon-status.json")
    assert "pipeline" in modules
    assert not modules & {"detections", "mitre", "replay", "aiokafka", "pydantic"}


def test_the_command_table_names_exactly_what_each_module_registers() -> None:
    """`COMMANDS` (which module to import for `klaxon <command>`) matches the modules."""
    for module, names in COMMANDS:
        parser = build_parser(names[0])
        sub = next(a for a in parser._actions if a.dest == "command")
        assert tuple(sub.choices) == names, module  # type: ignore[arg-type]


def test_the_full_parser_has_every_command_once() -> None:
    """`klaxon --help` (no command named) registers every module's commands."""
    names = [n for _, ns in COMMANDS for n in ns]
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert list(sub.choices) == names  # type: ignore[arg-type]


def test_rule_commands_other_than_convert_do_not_import_pysigma() -> None:
    """pySigma (the optional `convert` extra) is imported by `klaxon rules convert` only."""
    _, modules = loaded_by("rules", "validate", str(RULE))
    assert "sigma" not in modules
    _, modules = loaded_by("rules", "convert", "--target", "sqlite", "--summary", str(RULE))
    assert "sigma" in modules
