"""`pipeline.config.Settings` is one typed pydantic-settings model: each field declares its
variable and parser once, `from_env` reads only the mapping it is given, values are checked
when set (`replace` too), and secrets never print. (What each variable means and how it is
parsed: tests/brokers/test_config.py.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

import pipeline.config
from pipeline.config import Settings, effective
from pipeline.errors import ConfigError

TOKEN = "metrics-token-c0ffee"


def test_every_field_has_one_variable_and_is_documented() -> None:
    """The variables are the fields' (plus Kafka security's), each in the module docstring."""
    aliases = [f.validation_alias for f in Settings.model_fields.values()]
    declared = [a for a in aliases if isinstance(a, str)]
    assert len(declared) == len(set(declared)) == len(Settings.model_fields) - 1  # + security
    doc = pipeline.config.__doc__ or ""
    for variable in declared:
        assert f"``{variable}``" in doc, f"{variable} is not documented in pipeline/config.py"
    assert set(declared) < Settings.variables()
    assert "``KLAXON_CONFIG``" in doc
    assert "KAFKA_SASL_PASSWORD" in Settings.variables()


def test_from_env_reads_only_the_given_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLAXON_PARTITIONS", "9")
    assert Settings.from_env({}).partitions == 4
    assert Settings().partitions == 4  # keyword construction reads no environment
    assert Settings.from_env().partitions == 9


def test_blank_variables_keep_the_default() -> None:
    s = Settings.from_env({"KLAXON_PARTITIONS": "  ", "KLAXON_CLUSTER": "", "HOME": "/h"})
    assert (s.partitions, s.cluster, s.data_dir) == (4, "default", Path("/h/.local/share/klaxon"))


def test_replace_checks_values_and_names_like_construction() -> None:
    s = Settings.from_env({"KLAXON_PARTITIONS": "8"})
    wider = s.replace(partitions=16, cluster="prod")
    assert (wider.partitions, wider.cluster, s.partitions) == (16, "prod", 8)
    assert wider.replace(partitions=8, cluster=s.cluster) == s
    with pytest.raises(ValidationError):
        s.replace(partitons=16)  # a misspelt field is an error, not ignored
    with pytest.raises(ValidationError):
        s.replace(partitions="many")
    with pytest.raises(ValidationError):
        s.partitions = 2  # type: ignore[misc]  # frozen


def test_bad_values_name_their_variable() -> None:
    with pytest.raises(ConfigError, match=r"KLAXON_METRICS_ADDRESS='9464' is not HOST:PORT"):
        Settings.from_env({"KLAXON_METRICS_ADDRESS": "9464"})
    with pytest.raises(
        ConfigError, match=r"0.0.0.0:9464 is not loopback: set KLAXON_METRICS_TOKEN"
    ):
        Settings.from_env({"KLAXON_METRICS_ADDRESS": "0.0.0.0:9464"})
    s = Settings.from_env({"KLAXON_METRICS_ADDRESS": "0.0.0.0:9464", "KLAXON_METRICS_TOKEN": "t"})
    assert s.metrics_address == "0.0.0.0:9464"
    assert Settings.from_env({"KLAXON_METRICS_ADDRESS": "[::1]:9464"}).metrics_token is None


def test_secrets_never_print() -> None:
    """The metrics token and Kafka's passwords are masked in every rendering of the settings."""
    s = Settings.from_env(
        {
            "KLAXON_METRICS_TOKEN": TOKEN,
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
            "KAFKA_SASL_USERNAME": "klaxon",
            "KAFKA_SASL_PASSWORD": TOKEN,
        }
    )
    assert isinstance(s.metrics_token, SecretStr)
    assert s.metrics_token.get_secret_value() == TOKEN
    assert s.kafka_security.sasl_password is not None
    assert s.kafka_security.sasl_password.reveal() == TOKEN
    shown = [repr(s), str(s), f"{s}", s.model_dump_json(), json.dumps(effective(s))]
    for text in shown:
        assert TOKEN not in text
    assert effective(s)["KLAXON_METRICS_TOKEN"] == effective(s)["KAFKA_SASL_PASSWORD"] == "***"


def test_effective_names_every_variable_once() -> None:
    shown = effective(Settings.from_env({"KLAXON_RULES": "/a:/b", "KLAXON_PARTITIONS": "6"}))
    assert set(shown) == Settings.variables() - {"KLAXON_CONFIG"}
    assert (shown["KLAXON_RULES"], shown["KLAXON_PARTITIONS"]) == ("/a:/b", "6")
    assert shown["KLAXON_STATEFUL_DETECTORS"] == "correlations,new-terms,anomaly,silence"
    assert shown["KLAXON_ANOMALY_MODEL"] == ""


def test_a_config_file_sits_under_the_environment(tmp_path: Path) -> None:
    """KLAXON_CONFIG names a YAML file of the same variables, parsed the same way; a
    variable set in the environment wins, a blank one does not."""
    file = tmp_path / "klaxon.yaml"
    file.write_text(
        "KLAXON_PARTITIONS: 12\nKLAXON_CLUSTER: prod-eu\nKLAXON_STATEFUL_ADVANCE_DELAY: 2m\n"
        "KAFKA_SECURITY_PROTOCOL: SASL_PLAINTEXT\nKAFKA_SASL_MECHANISM: PLAIN\n"
        "KAFKA_SASL_USERNAME: klaxon\nKAFKA_SASL_PASSWORD: hunter2\n"
    )
    env = {"KLAXON_CONFIG": str(file), "KLAXON_CLUSTER": "prod-us", "KLAXON_APP_ID": ""}
    s = Settings.from_env({**env, "KLAXON_PARTITIONS": ""})
    assert (s.partitions, s.cluster, s.advance_delay) == (12, "prod-us", 120.0)
    assert s.kafka_security.sasl_username == "klaxon"
    assert Settings.from_env({}).partitions == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "KLAXON_PARTITION: 3\n",
            "'KLAXON_PARTITION' is not a setting (did you mean KLAXON_PARTITIONS?)",
        ),
        ("- KLAXON_PARTITIONS\n", "must be a mapping of setting variables to values"),
        ("KLAXON_RULES: [a, b]\n", "KLAXON_RULES must be a string or a number"),
        ("KLAXON_PARTITIONS: 0\n", "KLAXON_PARTITIONS='0' must be at least 1"),
        ("KLAXON_PARTITIONS: [\n", "not YAML"),
    ],
)
def test_a_bad_config_file_is_a_config_error(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "klaxon.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.from_env({"KLAXON_CONFIG": str(file)})
    with pytest.raises(ConfigError, match="cannot read"):
        Settings.from_env({"KLAXON_CONFIG": str(tmp_path / "missing.yaml")})
