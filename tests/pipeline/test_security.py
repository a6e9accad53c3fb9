"""Kafka security settings (`pipeline.security`), without a broker: parsing, validation at
start, masking of secrets, the child-process round trip, and what Faust hands to aiokafka.

The same settings against a real Apache Kafka with SASL_SSL and SSL listeners:
`tests/pipeline/test_secure_kafka.py`.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.app import create_app
from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.security import KafkaSecurity, Secret
from pipeline.worker import settings_env
from tests.secure_kafka import Certificates, make_certificates

PASSWORD = "s3cret-Pw-do-not-print"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def sasl_ssl_env(certs: Certificates, **more: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SSL_CAFILE": str(certs.ca),
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "klaxon",
        "KAFKA_SASL_PASSWORD": PASSWORD,
        **more,
    }


def test_default_is_plaintext_without_credentials() -> None:
    assert Settings.from_env({}).kafka_security == KafkaSecurity()
    assert KafkaSecurity().client_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert KafkaSecurity().faust_credentials() is None


def test_sasl_ssl_scram_becomes_aiokafka_arguments(certs: Certificates) -> None:
    security = Settings.from_env(sasl_ssl_env(certs)).kafka_security
    kwargs = security.client_kwargs()
    assert kwargs.pop("ssl_context").verify_mode.name == "CERT_REQUIRED"
    assert kwargs == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "klaxon",
        "sasl_plain_password": PASSWORD,
    }


def test_mechanism_and_protocol_are_case_insensitive() -> None:
    security = KafkaSecurity.from_env(
        {
            "KAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
            "KAFKA_SASL_MECHANISM": "scram_sha_256",
            "KAFKA_SASL_USERNAME": "u",
            "KAFKA_SASL_PASSWORD": "p",
        }
    )
    assert (security.protocol, security.sasl_mechanism) == ("SASL_PLAINTEXT", "SCRAM-SHA-256")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "must be one of PLAINTEXT, SSL"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs KAFKA_SASL_MECHANISM"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN"},
            "needs KAFKA_SASL_USERNAME",
        ),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_MECHANISM": "PLAIN",
                "KAFKA_SASL_USERNAME": "u",
            },
            "needs KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE",
        ),
        ({"KAFKA_SASL_MECHANISM": "PLAIN"}, "set but KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
        ({"KAFKA_SSL_CAFILE": "/etc/hostname"}, "KAFKA_SSL_CAFILE set but"),
        ({"KAFKA_SASL_MECHANISM": "OAUTHBEARER"}, "not supported (aiokafka needs a token"),
        ({"KAFKA_SASL_MECHANISM": "GSSAPI"}, "not supported"),
        ({"KAFKA_SASL_MECHANISM": "MD5"}, "must be one of PLAIN, SCRAM-SHA-256"),
        (
            {"KAFKA_SASL_PASSWORD": "a", "KAFKA_SASL_PASSWORD_FILE": "/x"},
            "set KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE, not both",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEYFILE": "/x.key"},
            "KAFKA_SSL_KEYFILE needs KAFKA_SSL_CERTFILE",
        ),
    ],
)
def test_inconsistent_settings_are_config_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Settings.from_env(env)


def test_missing_unreadable_or_invalid_ca_is_a_config_error(
    certs: Certificates, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(
        ConfigError, match=re.escape(f"KAFKA_SSL_CAFILE={missing}: cannot read: No such")
    ):
        Settings.from_env(sasl_ssl_env(certs, KAFKA_SSL_CAFILE=str(missing)))
    with pytest.raises(ConfigError, match=r"KAFKA_SSL_CAFILE=.*: cannot read"):
        Settings.from_env(sasl_ssl_env(certs, KAFKA_SSL_CAFILE=str(tmp_path)))  # a folder
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"KAFKA_SSL_CAFILE=.*: not a PEM CA certificate"):
        Settings.from_env(sasl_ssl_env(certs, KAFKA_SSL_CAFILE=str(garbage)))


def test_client_certificate_key_and_password_are_checked_at_start(certs: Certificates) -> None:
    base = {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(certs.ca)}
    ok = KafkaSecurity.from_env(
        {
            **base,
            "KAFKA_SSL_CERTFILE": str(certs.client_cert),
            "KAFKA_SSL_KEYFILE": str(certs.client_key_encrypted),
            "KAFKA_SSL_KEY_PASSWORD": certs.client_key_password,
        }
    )
    assert ok.ssl_context() is not None
    with pytest.raises(ConfigError, match="cannot load the client certificate and key"):
        KafkaSecurity.from_env(
            {
                **base,
                "KAFKA_SSL_CERTFILE": str(certs.client_cert),
                "KAFKA_SSL_KEYFILE": str(certs.client_key_encrypted),
                "KAFKA_SSL_KEY_PASSWORD": "wrong",
            }
        )
    with pytest.raises(ConfigError, match="cannot load the client certificate and key"):
        KafkaSecurity.from_env(  # the CA's certificate with the client's key: no match
            {
                **base,
                "KAFKA_SSL_CERTFILE": str(certs.ca),
                "KAFKA_SSL_KEYFILE": str(certs.client_key),
            }
        )


def test_password_file_is_read_and_passed_to_children_as_the_file(
    certs: Certificates, tmp_path: Path
) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")  # `echo pw > file` adds a newline; it is not part of it
    env = sasl_ssl_env(certs, KAFKA_SASL_PASSWORD_FILE=str(secret))
    del env["KAFKA_SASL_PASSWORD"]
    settings = Settings.from_env(env)
    assert settings.kafka_security.client_kwargs()["sasl_plain_password"] == PASSWORD
    child = settings_env(settings)
    assert child["KAFKA_SASL_PASSWORD_FILE"] == str(secret)
    assert PASSWORD not in "".join(child.values())
    assert Settings.from_env(child) == settings
    secret.unlink()
    with pytest.raises(ConfigError, match=r"KAFKA_SASL_PASSWORD_FILE=.*: cannot read"):
        Settings.from_env(env)


def test_settings_env_round_trips_every_security_setting(certs: Certificates) -> None:
    settings = Settings.from_env(
        sasl_ssl_env(
            certs,
            KAFKA_SSL_CERTFILE=str(certs.client_cert),
            KAFKA_SSL_KEYFILE=str(certs.client_key_encrypted),
            KAFKA_SSL_KEY_PASSWORD=certs.client_key_password,
        )
    )
    assert Settings.from_env(settings_env(settings)) == settings
    assert Settings.from_env(settings_env(Settings())) == Settings.from_env({})


def test_secrets_are_masked_in_repr_and_descriptions(certs: Certificates) -> None:
    settings = Settings.from_env(
        sasl_ssl_env(
            certs,
            KAFKA_SSL_CERTFILE=str(certs.client_cert),
            KAFKA_SSL_KEYFILE=str(certs.client_key_encrypted),
            KAFKA_SSL_KEY_PASSWORD=certs.client_key_password,
        )
    )
    shown = [
        repr(settings),
        str(settings),
        repr(settings.kafka_security),
        settings.kafka_security.describe(),
        repr(settings.kafka_security.faust_credentials()),
        f"{settings.kafka_security.sasl_password}",
    ]
    for text in shown:
        assert PASSWORD not in text
        assert certs.client_key_password not in text
    assert "Secret('***')" in repr(settings)
    assert (
        settings.kafka_security.describe()
        == "SASL_SSL SCRAM-SHA-512 user=klaxon client-cert=" + str(certs.client_cert)
    )
    assert Secret("a") != Secret("b")


def test_faust_passes_the_same_arguments_to_its_clients(certs: Certificates) -> None:
    """Faust's aiokafka driver turns ``broker_credentials`` into the arguments of its worker
    consumer, client consumer and producer with `credentials_to_aiokafka_auth`; they must be
    `client_kwargs`."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    for env in (
        sasl_ssl_env(certs),
        sasl_ssl_env(certs, KAFKA_SASL_MECHANISM="PLAIN"),
        {
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
            "KAFKA_SECURITY_PROTOCOL": "SSL",
            "KAFKA_SSL_CAFILE": str(certs.ca),
            "KAFKA_SSL_CERTFILE": str(certs.client_cert),
            "KAFKA_SSL_KEYFILE": str(certs.client_key),
        },
        {
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": "PLAIN",
            "KAFKA_SASL_USERNAME": "u",
            "KAFKA_SASL_PASSWORD": "p",
        },
    ):
        settings = Settings.from_env(env)
        app = create_app(settings)
        faust_kwargs = credentials_to_aiokafka_auth(
            app.conf.broker_credentials, app.conf.ssl_context
        )
        ours = settings.kafka_security.client_kwargs()
        assert (faust_kwargs.pop("ssl_context", None) is None) == (
            ours.pop("ssl_context", None) is None
        )
        assert faust_kwargs == ours, env["KAFKA_SECURITY_PROTOCOL"]
        producer = app.producer
        assert {**producer._settings_default(), **producer._settings_auth()}[
            "security_protocol"
        ] == (settings.kafka_security.protocol)
    plain = create_app(Settings().replace(bootstrap_servers="127.0.0.1:1"))
    assert plain.conf.broker_credentials is None


@pytest.mark.parametrize(
    "argv",
    [
        ["worker"],
        ["topics", "create"],
        ["replay", "/dev/null"],
    ],
)
def test_commands_refuse_a_missing_ca_at_start(argv: list[str], tmp_path: Path) -> None:
    """Every Kafka command reads the settings first: a missing CA file stops it at once
    (exit 2, the variable named), before any connection is tried."""
    import os

    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SSL_CAFILE": str(tmp_path / "no-ca.pem"),
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_SASL_USERNAME": "klaxon",
        "KAFKA_SASL_PASSWORD": PASSWORD,
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "klaxon", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 2, done.stderr
    assert f"KAFKA_SSL_CAFILE={tmp_path / 'no-ca.pem'}: cannot read" in done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    assert time.monotonic() - started < 30
