"""``klaxon config show`` prints the configuration in effect, secrets masked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from klaxon.cli import main
from pipeline.config import Settings

TOKEN = "s3cr3t-metrics-token"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in Settings.variables():
        monkeypatch.delenv(variable, raising=False)


def test_show_prints_every_setting_marks_defaults_and_masks_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KLAXON_PARTITIONS", "12")
    monkeypatch.setenv("KLAXON_METRICS_TOKEN", TOKEN)
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert TOKEN not in out
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines()}
    assert set(lines) == Settings.variables()
    assert lines["KLAXON_PARTITIONS"] == ["12"]
    assert lines["KLAXON_METRICS_TOKEN"] == ["***"]
    assert lines["KLAXON_REPLICATION_FACTOR"] == ["1", "(default)"]
    assert lines["KLAXON_ANOMALY_MODEL"] == ["-", "(default)"]


def test_show_json(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "klaxon")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", TOKEN)
    assert main(["config", "show", "--json"]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out)
    assert TOKEN not in out
    assert (shown["KAFKA_SASL_USERNAME"], shown["KAFKA_SASL_PASSWORD"]) == ("klaxon", "***")


def test_a_bad_value_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KLAXON_PARTITIONS", "lots")
    assert main(["config", "show"]) == 2
    assert "KLAXON_PARTITIONS='lots' is not an integer" in capsys.readouterr().err


def test_show_says_which_values_came_from_the_config_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    file = tmp_path / "klaxon.yaml"
    file.write_text("KLAXON_PARTITIONS: 12\nKLAXON_CLUSTER: from-file\n")
    monkeypatch.setenv("KLAXON_CONFIG", str(file))
    monkeypatch.setenv("KLAXON_CLUSTER", "from-env")
    assert main(["config", "show"]) == 0
    lines = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()}
    assert lines["KLAXON_PARTITIONS"] == ["12", "(file)"]
    assert lines["KLAXON_CLUSTER"] == ["from-env"]
    assert lines["KLAXON_CONFIG"] == [str(file)]
