"""The outputs file: strict keys, credentials from the environment or files, filters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import ConfigError
from pipeline.outputs.config import OutputConfig, OutputsFile, load_outputs
from schemas.alert import example_alert


def cfg(**fields: Any) -> OutputConfig:
    return OutputConfig.model_validate(
        {"name": "o", "type": "webhook", "url": "http://x", **fields}
    )


@pytest.mark.parametrize(
    ("fields", "alert", "wanted"),
    [
        ({"min_severity": "high"}, {"severity": "high"}, True),
        ({"min_severity": "high"}, {"severity": "medium"}, False),
        ({"rules": ["r1"]}, {"rule": {"id": "r1"}}, True),
        ({"rules": ["r1"]}, {"rule": {"id": "r2"}}, False),
        ({"exclude_rules": ["r1"]}, {"rule": {"id": "r1"}}, False),
        ({"tags": ["team.payments"]}, {"tags": ["attack.t1611", "team.payments"]}, True),
        ({"tags": ["team.payments"]}, {"tags": ["attack.t1611"]}, False),
        ({"tags": ["attack.t1611"]}, {"tags": []}, True),  # no rule tags: its ATT&CK ids
        ({"namespaces": ["prod-*"]}, {"object": {"namespace": "prod-eu"}}, True),
        ({"namespaces": ["prod-*"]}, {"object": {"namespace": "dev"}}, False),
        ({"namespaces": ["prod-*"]}, {"object": {"namespace": None}}, False),
    ],
)
def test_filters(fields: dict[str, Any], alert: dict[str, Any], wanted: bool) -> None:
    """Severity floor, rule ids in and out, any of the tags, namespace wildcards."""
    assert cfg(**fields).wants({**example_alert(), **alert}) is wanted


def test_credentials_come_from_the_environment_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """token_env / token_file / url_env are read at start, stripped, and never shown."""
    monkeypatch.setenv("T", "tok-env\n")
    (tmp_path / "t").write_text("tok-file\n")
    assert cfg(token_env="T").resolve_token().get_secret_value() == "tok-env"  # type: ignore[union-attr]
    assert cfg(token_file=tmp_path / "t").resolve_token().get_secret_value() == "tok-file"  # type: ignore[union-attr]
    monkeypatch.setenv("U", "https://hooks.example/secret-path")
    c = OutputConfig(name="chat", type="slack", url_env="U")
    assert c.resolve_url().get_secret_value().endswith("secret-path")
    assert "secret-path" not in repr(c.resolve_url()) and "tok-env" not in repr(cfg(token_env="T"))
    with pytest.raises(ConfigError, match="output o: token: environment variable NOPE is not set"):
        cfg(token_env="NOPE").resolve_token()
    with pytest.raises(ConfigError, match="url must be http"):
        cfg(url="ftp://x").resolve_url()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("outputs: []", "outputs: Tuple should have at least 1 item"),
        ("outputs:\n  - {name: a, type: webhook}", "give exactly one of url, url_env, url_file"),
        (
            "outputs:\n  - {name: a, type: webhook, url: 'http://x'}\n"
            "  - {name: a, type: slack, url: 'http://y'}",
            "output names must be unique: a",
        ),
        ("outputs:\n  - {name: 'a b', type: webhook, url: 'http://x'}", "name 'a b'"),
        (
            "outputs:\n  - {name: a, type: webhook, url: 'http://x', batch: {max_alerts: 0}}",
            "outputs.0.batch.max_alerts",
        ),
        ("outputs: [", "not YAML"),
    ],
)
def test_bad_files_are_config_errors_naming_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    """Each problem is reported with the file and the key path."""
    path = tmp_path / "outputs.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=str(path)) as err:
        load_outputs(path)
    assert message in str(err.value)


def test_retry_backoff_is_exponential_and_capped() -> None:
    """0.5 s, 1 s, 2 s ... up to max_delay; a server's Retry-After wins when longer."""
    retry = (
        OutputsFile.model_validate(
            {
                "outputs": [
                    {
                        "name": "a",
                        "type": "webhook",
                        "url": "http://x",
                        "retry": {"initial": 0.5, "max_delay": 4},
                    }
                ]
            }
        )
        .outputs[0]
        .retry
    )
    assert [retry.delay(a) for a in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert retry.delay(1, hint=3.0) == 3.0 and retry.delay(5, hint=100) == 4.0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"type": "webhook", "index": "x"}, "output o: index does not apply to webhook"),
        ({"type": "splunk_hec", "shape": "falco"}, "output o: shape does not apply to splunk_hec"),
        ({"type": "slack", "format": "ecs"}, "output o: format does not apply to slack"),
        ({"type": "webhook", "format": "cef"}, "output o: unknown format 'cef'"),
        ({"type": "elasticsearch"}, "output o: elasticsearch needs an index"),
    ],
)
def test_settings_an_output_would_ignore_are_errors(fields: dict[str, Any], message: str) -> None:
    """A setting that does not apply to the output's type is refused, not silently ignored."""
    from pipeline.outputs import OUTPUTS

    config = cfg(**fields)
    with pytest.raises(ConfigError, match=message):
        OUTPUTS[config.type](config)
