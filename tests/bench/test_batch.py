"""``bench batch`` measures each batch size it is given, on every stage, and prints them."""

from __future__ import annotations

import pytest

from bench.batch import main, run


def test_every_batch_size_gets_a_row_with_each_stage_measured() -> None:
    rows = run([40, 100], events=400, rounds=2)
    assert [r.batch for r in rows] == [40, 100]
    for row in rows:
        assert row.decode > 0 and row.engine > 0 and row.stateful > 0
        assert row.total == pytest.approx(row.decode + row.engine + row.stateful)


def test_the_table_gives_each_size_its_ratio_to_the_first(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--batches", "50,200", "--events", "400", "--rounds", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["batch", "decode", "engine", "stateful", "total", "x", "first"]
    assert lines[1].split()[0] == "50" and lines[1].endswith("1.00")
    assert lines[2].split()[0] == "200"
