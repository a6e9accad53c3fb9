"""The command line in a pipeline: `klaxon rules list | head -1` ends quietly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from klaxon.cli import EXIT_BROKEN_PIPE


def run_into_closed_pipe(*argv: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``klaxon argv`` with stdout a pipe whose reader is already gone (as after
    ``| head -1`` exits), so the first write fails for sure."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "klaxon", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "argv", [["rules", "list"], ["rules", "list", "--json"], ["mitre", "coverage"]], ids=" ".join
)
def test_closed_stdout_exits_141_without_a_traceback(argv: list[str]) -> None:
    """A reader that went away is not an error worth a traceback: exit 141 (128 + SIGPIPE,
    what a shell reports for other tools), nothing on stderr."""
    done = run_into_closed_pipe(*argv)
    assert done.returncode == EXIT_BROKEN_PIPE
    assert done.stderr == b""


def test_a_pipe_that_stays_open_gets_everything() -> None:
    """The normal case is untouched: exit 0, the whole table."""
    done = subprocess.run(
        [sys.executable, "-m", "klaxon", "rules", "list"], capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines()[0].startswith("ID ")
