"""The README's rule-writing guide is executable: files written, commands run, outputs compared.

Conventions in the guide: a fenced block whose info string has ``file=PATH`` is written to
PATH; a ``console`` block holds ``$ klaxon ...`` commands, each followed by its expected
output (stdout and stderr, either one first). An expected line ending in ``...`` matches any
line starting with the text before the dots.
"""

from __future__ import annotations

import io
import re
import shlex
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from detections.cli import main

GUIDE = Path(__file__).resolve().parents[2] / "README.md"
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.M | re.S)


def blocks() -> list[tuple[str, str, str]]:
    """(language, info, body) of every fenced block, in order."""
    return [(m.group(1), m.group(2).strip(), m.group(3)) for m in FENCE.finditer(GUIDE.read_text())]


def commands() -> list[tuple[str, list[str]]]:
    """(command line, expected output lines) pairs from the console blocks."""
    out: list[tuple[str, list[str]]] = []
    for lang, _, body in blocks():
        if lang != "console":
            continue
        for line in body.splitlines():
            if line.startswith("$ "):
                out.append((line[2:], []))
            elif out:
                out[-1][1].append(line)
    return out


def run(command: str) -> tuple[int, list[str], list[str]]:
    """Run one `klaxon rules ...` command in-process: exit code, stdout and stderr lines."""
    argv = shlex.split(command)
    assert argv[0] == "klaxon"
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv[1:])
    return code, out.getvalue().splitlines(), err.getvalue().splitlines()


def matches(expected: list[str], actual: list[str]) -> bool:
    """Line-by-line equality, with trailing '...' as a prefix match."""
    if len(expected) != len(actual):
        return False
    return all(
        a.startswith(e[:-3]) if e.endswith("...") else a == e
        for e, a in zip(expected, actual, strict=True)
    )


def test_guide_has_a_complete_worked_example() -> None:
    """The guide shows validate, test, explain and run on a rule file and an event file."""
    verbs = [shlex.split(c)[2] for c, _ in commands()]
    assert {"validate", "test", "explain", "run"} <= set(verbs)
    assert any("file=rules/" in info for _, info, _ in blocks())


def test_guide_commands_produce_the_documented_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each command in the guide, run after writing the guide's files, prints what it says."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KLAXON_LISTS", raising=False)
    for _, info, body in blocks():
        m = re.search(r"file=(\S+)", info)
        if m:
            path = tmp_path / m.group(1)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
    for command, expected in commands():
        _, out, err = run(command)
        actual = err + out
        assert matches(expected, err + out) or matches(expected, out + err), (
            f"$ {command}\nexpected:\n" + "\n".join(expected) + "\nactual:\n" + "\n".join(actual)
        )
