"""`klaxon dashboard` reports queries that read metrics nobody exposes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from klaxon.cli import main
from klaxon.dashboard_cli import DASHBOARD, metric_names, panels

EXPOSITION = """\
# TYPE klaxon_events_in_total counter
klaxon_events_in_total{stage="normalise"} 10.0
"""


def dashboard(tmp_path: Path, *exprs: str) -> Path:
    doc = {
        "panels": [{"title": f"panel {i}", "targets": [{"expr": e}]} for i, e in enumerate(exprs)]
    }
    path = tmp_path / "dash.json"
    path.write_text(json.dumps(doc))
    return path


def test_a_query_naming_an_unexposed_metric_fails_naming_the_panel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "m.prom").write_text(EXPOSITION)
    path = dashboard(
        tmp_path, "sum(rate(klaxon_events_in_total[5m]))", "sum(klaxon_evnets_in_total)"
    )
    argv = ["dashboard", "--dashboard", str(path), "--metrics", str(tmp_path / "m.prom")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "panel 1: klaxon_evnets_in_total is not exposed" in err and "panel 0" not in err


def test_every_shipped_query_parses_and_names_klaxon_metrics() -> None:
    found = panels(json.loads(DASHBOARD.read_text()))
    names = {n for p in found for q in p.queries for n in metric_names(q)}
    assert found and names and all(n.startswith("klaxon_") for n in names)


def test_a_declared_family_without_samples_counts_as_exposed(tmp_path: Path) -> None:
    """A labelled counter nothing has incremented yet (no 401 answered so far) is exposed:
    its HELP and TYPE lines are there, its first sample comes with the first event."""
    (tmp_path / "m.prom").write_text("# TYPE klaxon_webhook_requests_total counter\n")
    path = dashboard(tmp_path, 'sum(rate(klaxon_webhook_requests_total{code="401"}[5m]))')
    argv = ["dashboard", "--dashboard", str(path), "--metrics", str(tmp_path / "m.prom")]
    assert main(argv) == 0
