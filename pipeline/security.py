"""How Klaxon's Kafka clients authenticate and encrypt: one typed place, read from the environment.

`KafkaSecurity` holds the ``KAFKA_SECURITY_PROTOCOL`` / ``KAFKA_SSL_*`` / ``KAFKA_SASL_*``
variables (``docs/operations.md``, "Secure Kafka"), checked when read: a SASL protocol without
a mechanism, a CA file that cannot be read or is not PEM, a key that does not match its
certificate... are a `ConfigError` at start, never a hang or a late failure. It is a field of
`pipeline.config.Settings` (``settings.kafka_security``) and turns into:

- `KafkaSecurity.client_kwargs`: keyword arguments of every aiokafka client
  (``AIOKafkaProducer``, ``AIOKafkaConsumer``, ``AIOKafkaAdminClient``, ``AIOKafkaClient``):
  what `pipeline.topics`, the webhook intake's producer and (composed in ``klaxon/``, which
  passes them to `replay.producer`) the replay use;
- `KafkaSecurity.faust_credentials`: Faust's ``broker_credentials``, which Faust turns back
  into the same aiokafka arguments for its consumer, producer and client consumer
  (``credentials_to_aiokafka_auth`` in ``faust/transport/drivers/aiokafka.py``);
- `KafkaSecurity.env`: the variables that give a child process the same settings.

Secrets (the SASL password, the private key's password) are `Secret` values: their ``repr``
and ``str`` are masked, so neither ``repr(settings)`` nor a log line shows them. A password
read from a ``*_FILE`` is passed to child processes as that file, not as its value.

Supported: PLAINTEXT, SSL (optionally with a client certificate), SASL_PLAINTEXT and SASL_SSL
with PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512. Not supported: OAUTHBEARER (aiokafka needs an
``AbstractTokenProvider`` object that fetches tokens, i.e. code per identity provider, not a
setting) and GSSAPI (needs the ``gssapi`` package and a Kerberos set-up).

>>> s = KafkaSecurity.from_env({"KAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
...     "KAFKA_SASL_MECHANISM": "scram-sha-512", "KAFKA_SASL_USERNAME": "klaxon",
...     "KAFKA_SASL_PASSWORD": "hunter2"})
>>> s  # doctest: +ELLIPSIS
KafkaSecurity(protocol='SASL_PLAINTEXT', ..., sasl_password=Secret('***'))
>>> sorted(s.client_kwargs())
['sasl_mechanism', 'sasl_plain_password', 'sasl_plain_username', 'security_protocol']
>>> KafkaSecurity.from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
pipeline.errors.ConfigError: KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_MECHANISM (...)
"""

from __future__ import annotations

import dataclasses
import hmac
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

__all__ = ["MECHANISMS", "PROTOCOLS", "KafkaSecurity", "Secret"]

#: Values of ``KAFKA_SECURITY_PROTOCOL``.
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
#: Values of ``KAFKA_SASL_MECHANISM``.
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_UNSUPPORTED = {
    "OAUTHBEARER": "aiokafka needs a token provider object (code per identity provider), which"
    " Klaxon does not ship",
    "GSSAPI": "Kerberos is not supported by Klaxon",
}


class Secret:
    """A string that never shows itself in ``repr``/``str``/f-strings; `reveal` returns it.

    >>> p = Secret("hunter2")
    >>> p, str(p), f"{p}", p.reveal(), p == Secret("hunter2")
    (Secret('***'), '***', '***', 'hunter2', True)
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself: only for handing it to the client that needs it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, len(self._value)))

    def __reduce__(self) -> Any:  # pickling keeps the value (copy, multiprocessing)
        return (Secret, (self._value,))


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name, "").strip()
    return Path(raw).expanduser() if raw else None


def _read_secret_file(name: str, path: Path) -> Secret:
    """The file's content without its trailing newline (``echo pw > file`` writes one)."""
    try:
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}={path}: cannot read: {_why(exc)}") from None
    if not value:
        raise ConfigError(f"{name}={path}: the file is empty")
    return Secret(value)


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _secret(env: Mapping[str, str], name: str) -> tuple[Secret | None, Path | None]:
    """``name`` or ``name_FILE`` (not both): the secret and the file it came from."""
    value = env.get(name, "")
    path = _path(env, f"{name}_FILE")
    if value and path is not None:
        raise ConfigError(f"set {name} or {name}_FILE, not both")
    if path is not None:
        return _read_secret_file(f"{name}_FILE", path), path
    return (Secret(value) if value else None), None


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    value = raw.upper().replace("_", "-") if name.endswith("MECHANISM") else raw.upper()
    if value in _UNSUPPORTED:
        raise ConfigError(f"{name}={raw}: not supported ({_UNSUPPORTED[value]})")
    if value not in choices:
        raise ConfigError(f"{name}={raw!r}: must be one of {', '.join(choices)}")
    return value


@dataclass(frozen=True)
class KafkaSecurity:
    """Security settings of Klaxon's Kafka clients; build with `from_env` (which validates).

    The default is PLAINTEXT with no authentication (the embedded broker, local clusters).
    Fields left at their default are left out of the ``repr``.
    """

    protocol: str = "PLAINTEXT"
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: Secret | None = None
    ssl_key_password_file: Path | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    sasl_password_file: Path | None = None

    def __repr__(self) -> str:
        given = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != f.default
        ]
        return f"KafkaSecurity({', '.join(given)})"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KafkaSecurity:
        """Read and validate the ``KAFKA_SECURITY_PROTOCOL``/``KAFKA_SSL_*``/``KAFKA_SASL_*``
        variables; raises `ConfigError` naming the variable at fault.

        >>> KafkaSecurity.from_env({})
        KafkaSecurity()
        >>> KafkaSecurity.from_env({"KAFKA_SECURITY_PROTOCOL": "SSL",  # doctest: +ELLIPSIS
        ...                         "KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"})
        Traceback (most recent call last):
        ...
        pipeline.errors.ConfigError: KAFKA_SSL_CAFILE=/nonexistent/ca.pem: cannot read: No such ...
        """
        key_password, key_password_file = _secret(env, "KAFKA_SSL_KEY_PASSWORD")
        sasl_password, sasl_password_file = _secret(env, "KAFKA_SASL_PASSWORD")
        security = cls(
            protocol=_choice(env, "KAFKA_SECURITY_PROTOCOL", PROTOCOLS) or cls.protocol,
            ssl_cafile=_path(env, "KAFKA_SSL_CAFILE"),
            ssl_certfile=_path(env, "KAFKA_SSL_CERTFILE"),
            ssl_keyfile=_path(env, "KAFKA_SSL_KEYFILE"),
            ssl_key_password=key_password,
            ssl_key_password_file=key_password_file,
            sasl_mechanism=_choice(env, "KAFKA_SASL_MECHANISM", MECHANISMS),
            sasl_username=env.get("KAFKA_SASL_USERNAME", "").strip() or None,
            sasl_password=sasl_password,
            sasl_password_file=sasl_password_file,
        )
        security.validate()
        return security

    @property
    def uses_ssl(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def validate(self) -> None:
        """Check that the settings fit together and that the TLS files load; `ConfigError`."""
        p = f"KAFKA_SECURITY_PROTOCOL={self.protocol}"
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"{p}: must be one of {', '.join(PROTOCOLS)}")
        if self.uses_sasl:
            if self.sasl_mechanism is None:
                raise ConfigError(
                    f"{p} needs KAFKA_SASL_MECHANISM ({', '.join(MECHANISMS[:-1])}"
                    f" or {MECHANISMS[-1]})"
                )
            if self.sasl_mechanism not in MECHANISMS:
                raise ConfigError(f"KAFKA_SASL_MECHANISM={self.sasl_mechanism}: not supported")
            if not self.sasl_username:
                raise ConfigError(f"{p} needs KAFKA_SASL_USERNAME")
            if self.sasl_password is None:
                raise ConfigError(f"{p} needs KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE")
        else:
            given = [
                name
                for name, value in (
                    ("KAFKA_SASL_MECHANISM", self.sasl_mechanism),
                    ("KAFKA_SASL_USERNAME", self.sasl_username),
                    ("KAFKA_SASL_PASSWORD", self.sasl_password),
                )
                if value is not None
            ]
            if given:
                raise ConfigError(
                    f"{', '.join(given)} set but {p}: use SASL_SSL (or SASL_PLAINTEXT)"
                )
        if self.uses_ssl:
            self._check_tls_files()
        else:
            given = [
                name
                for name, value in (
                    ("KAFKA_SSL_CAFILE", self.ssl_cafile),
                    ("KAFKA_SSL_CERTFILE", self.ssl_certfile),
                    ("KAFKA_SSL_KEYFILE", self.ssl_keyfile),
                    ("KAFKA_SSL_KEY_PASSWORD", self.ssl_key_password),
                )
                if value is not None
            ]
            if given:
                raise ConfigError(f"{', '.join(given)} set but {p}: use SSL or SASL_SSL")

    def _check_tls_files(self) -> None:
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ConfigError("KAFKA_SSL_KEYFILE needs KAFKA_SSL_CERTFILE (the client certificate)")
        if self.ssl_key_password is not None and self.ssl_certfile is None:
            raise ConfigError("KAFKA_SSL_KEY_PASSWORD needs KAFKA_SSL_CERTFILE and its key")
        for name, path in (
            ("KAFKA_SSL_CAFILE", self.ssl_cafile),
            ("KAFKA_SSL_CERTFILE", self.ssl_certfile),
            ("KAFKA_SSL_KEYFILE", self.ssl_keyfile),
        ):
            if path is None:
                continue
            try:
                with path.open("rb") as f:
                    f.read(1)
            except OSError as exc:
                raise ConfigError(f"{name}={path}: cannot read: {_why(exc)}") from None
        from aiokafka.helpers import create_ssl_context

        if self.ssl_cafile is not None:
            try:
                create_ssl_context(cafile=str(self.ssl_cafile))
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ConfigError(
                    f"KAFKA_SSL_CAFILE={self.ssl_cafile}: not a PEM CA certificate ({exc})"
                ) from None
        if self.ssl_certfile is not None:
            try:
                self.ssl_context()
            except (ssl.SSLError, OSError, ValueError) as exc:
                key = f" / KAFKA_SSL_KEYFILE={self.ssl_keyfile}" if self.ssl_keyfile else ""
                raise ConfigError(
                    f"KAFKA_SSL_CERTFILE={self.ssl_certfile}{key}: cannot load the client"
                    f" certificate and key (not PEM, key does not match, or wrong or missing"
                    f" KAFKA_SSL_KEY_PASSWORD): {exc}"
                ) from None

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client TLS context (aiokafka's ``create_ssl_context``: hostname checked against the
        broker certificate; the system CAs unless ``KAFKA_SSL_CAFILE``), or None without TLS."""
        if not self.uses_ssl:
            return None
        from aiokafka.helpers import create_ssl_context

        password = self.ssl_key_password.reveal() if self.ssl_key_password else None
        context: ssl.SSLContext = create_ssl_context(
            cafile=str(self.ssl_cafile) if self.ssl_cafile else None,
            certfile=str(self.ssl_certfile) if self.ssl_certfile else None,
            keyfile=str(self.ssl_keyfile) if self.ssl_keyfile else None,
            password=password,
        )
        return context

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client (a new TLS context on each call).

        >>> KafkaSecurity().client_kwargs()
        {'security_protocol': 'PLAINTEXT'}
        """
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_ssl:
            kwargs["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            assert self.sasl_password is not None  # validate() checked
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password.reveal()
        return kwargs

    def faust_credentials(self) -> Any:
        """Faust's ``broker_credentials`` for these settings (None for PLAINTEXT).

        >>> KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
        ...               sasl_username="u", sasl_password=Secret("p")).faust_credentials()
        <SASLCredentials: username=u>
        """
        import faust

        if self.uses_sasl:
            assert self.sasl_password is not None
            return faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password.reveal(),
                ssl_context=self.ssl_context(),  # None: SASL_PLAINTEXT, else SASL_SSL
                mechanism=self.sasl_mechanism,
            )
        if self.uses_ssl:
            return faust.SSLCredentials(self.ssl_context())
        return None

    def describe(self) -> str:
        """One line for logs and messages, without secrets.

        >>> KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="u",
        ...               sasl_password=Secret("p")).describe()
        'SASL_SSL PLAIN user=u'
        """
        parts = [self.protocol]
        if self.uses_sasl:
            parts += [str(self.sasl_mechanism), f"user={self.sasl_username}"]
        if self.ssl_certfile is not None:
            parts.append(f"client-cert={self.ssl_certfile}")
        return " ".join(parts)

    def env(self) -> dict[str, str]:
        """Variables reproducing these settings in a child process (`from_env`'s inverse).
        A secret read from a file is passed as the file.

        >>> s = KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
        ...                   sasl_username="u", sasl_password=Secret("p"))
        >>> KafkaSecurity.from_env(s.env()) == s
        True
        """

        def text(value: object) -> str:
            if isinstance(value, Secret):
                return value.reveal()
            return "" if value is None else str(value)

        env = {
            "KAFKA_SECURITY_PROTOCOL": self.protocol,
            "KAFKA_SSL_CAFILE": text(self.ssl_cafile),
            "KAFKA_SSL_CERTFILE": text(self.ssl_certfile),
            "KAFKA_SSL_KEYFILE": text(self.ssl_keyfile),
            "KAFKA_SSL_KEY_PASSWORD": "",
            "KAFKA_SSL_KEY_PASSWORD_FILE": text(self.ssl_key_password_file),
            "KAFKA_SASL_MECHANISM": text(self.sasl_mechanism),
            "KAFKA_SASL_USERNAME": text(self.sasl_username),
            "KAFKA_SASL_PASSWORD": "",
            "KAFKA_SASL_PASSWORD_FILE": text(self.sasl_password_file),
        }
        if self.ssl_key_password_file is None:
            env["KAFKA_SSL_KEY_PASSWORD"] = text(self.ssl_key_password)
        if self.sasl_password_file is None:
            env["KAFKA_SASL_PASSWORD"] = text(self.sasl_password)
        return env


async def connection_problem(
    bootstrap: str, client_kwargs: Mapping[str, Any], timeout: float = 10.0
) -> str | None:
    """Why no server of ``bootstrap`` accepts a connection with ``client_kwargs``, or None.

    aiokafka reports a failed bootstrap as ``Unable to bootstrap from [...]`` and only logs
    the cause; this connects to each server once, directly, to name it (e.g.
    ``SaslAuthenticationFailed: ... invalid credentials``, ``certificate verify failed``).
    """
    import asyncio

    from aiokafka.conn import create_conn

    problems = []
    for server in (s.strip() for s in bootstrap.split(",") if s.strip()):
        host, _, port = server.rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host or server,
                    int(port or 9092),
                    request_timeout_ms=int(timeout * 1000),
                    **client_kwargs,
                ),
                timeout,
            )
        except TimeoutError:
            problems.append(f"{server}: no answer within {timeout:g}s")
            continue
        except Exception as exc:  # aiokafka, ssl and socket errors alike: all are the answer
            text = str(exc) or repr(exc)
            name = type(exc).__name__
            problems.append(f"{server}: {text if name in text else f'{name}: {text}'}")
            continue
        conn.close()
        return None
    return "; ".join(problems) or None
