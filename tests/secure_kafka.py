"""A test-only Apache Kafka with secure listeners beside its PLAINTEXT one.

`SecureKafka` is a 1-node `pipeline.brokers.KafkaCluster` that also listens on

- ``SASL_SSL`` (mechanisms PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512), with SCRAM users
  written into the metadata log when storage is formatted (``kafka-storage format
  --add-scram``, supported by KRaft since Kafka 3.5) and PLAIN users in the listener's JAAS
  configuration (``listener.name.sasl_ssl.plain.sasl.jaas.config``);
- ``SSL`` with ``ssl.client.auth=required``: clients must show a certificate of the test CA.

Certificates come from `trustme` (a throw-away CA made per session). Kafka reads PEM key
stores only with PKCS#8 keys, so the server key is converted with ``cryptography``. The
PLAINTEXT listener (inter-broker, controller-free clients and the readiness probe) is kept,
so tests can set up and inspect topics without credentials.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Self

from pipeline.brokers import KafkaCluster

__all__ = ["PLAIN_USER", "SCRAM_USER", "Certificates", "SecureKafka", "make_certificates"]

#: (user, password) of the SCRAM users (both SHA-256 and SHA-512 credentials).
SCRAM_USER = ("klaxon-scram", "scram-s3cret-Pw!")
#: (user, password) of the PLAIN user.
PLAIN_USER = ("klaxon-plain", "plain-s3cret-Pw!")


@dataclass(frozen=True)
class Certificates:
    """PEM files of one test CA, the broker's certificate and a client's."""

    ca: Path
    server_keystore: Path  # PKCS#8 key + certificate chain, for Kafka's PEM key store
    client_cert: Path  # certificate chain
    client_key: Path  # unencrypted key
    client_key_encrypted: Path  # the same key, encrypted with `client_key_password`
    client_key_password: str


def make_certificates(folder: Path) -> Certificates:
    """A fresh CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    import trustme
    from cryptography.hazmat.primitives import serialization

    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("klaxon-client@example.com", common_name="klaxon-client")

    def pkcs8(pem: bytes, password: bytes | None = None) -> bytes:
        key = serialization.load_pem_private_key(pem, password=None)
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    def write(name: str, data: bytes) -> Path:
        path = folder / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    chain = b"".join(blob.bytes() for blob in server.cert_chain_pems)
    client_chain = b"".join(blob.bytes() for blob in client.cert_chain_pems)
    password = "client-key-Pw"
    return Certificates(
        ca=write("ca.pem", ca.cert_pem.bytes()),
        server_keystore=write("server.pem", pkcs8(server.private_key_pem.bytes()) + chain),
        client_cert=write("client.pem", client_chain),
        client_key=write("client.key", pkcs8(client.private_key_pem.bytes())),
        client_key_encrypted=write(
            "client-encrypted.key", pkcs8(client.private_key_pem.bytes(), password.encode())
        ),
        client_key_password=password,
    )


def _jaas_plain(users: dict[str, str]) -> str:
    entries = " ".join(f'user_{u}="{p}"' for u, p in users.items())
    user, password = next(iter(users.items()))
    return (
        "org.apache.kafka.common.security.plain.PlainLoginModule required"
        f' username="{user}" password="{password}" {entries};'
    )


class SecureKafka(KafkaCluster):
    """1-node Kafka with PLAINTEXT, SASL_SSL and SSL (client auth) listeners on 127.0.0.1."""

    def __init__(self, certs: Certificates, **kwargs: object) -> None:
        super().__init__(1, **kwargs)  # type: ignore[arg-type]
        self.certs = certs
        self.sasl_ssl_port = 0
        self.ssl_port = 0

    @property
    def sasl_ssl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_ssl_port}"

    @property
    def ssl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ssl_port}"

    async def astart(self) -> Self:
        if not self.sasl_ssl_port:
            self.sasl_ssl_port, self.ssl_port = self._distinct_ports(2)
        return await super().astart()

    def format_arguments(self, i: int) -> list[str]:
        user, password = SCRAM_USER
        return [
            arg
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512")
            for arg in ("--add-scram", f"{mechanism}=[name={user},password={password}]")
        ]

    def server_properties(self, i: int) -> dict[str, str]:
        props = super().server_properties(i)
        sasl, tls = self.sasl_ssl_port, self.ssl_port
        props["listeners"] += f",SASL_SSL://127.0.0.1:{sasl},SSL://127.0.0.1:{tls}"
        props["advertised.listeners"] += f",SASL_SSL://127.0.0.1:{sasl},SSL://127.0.0.1:{tls}"
        props["listener.security.protocol.map"] += ",SASL_SSL:SASL_SSL,SSL:SSL"
        keystore = {
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.certs.server_keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.certs.ca),
        }
        for listener in ("sasl_ssl", "ssl"):
            props.update({f"listener.name.{listener}.{k}": v for k, v in keystore.items()})
        props["listener.name.ssl.ssl.client.auth"] = "required"
        props["listener.name.sasl_ssl.sasl.enabled.mechanisms"] = (
            "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
        )
        props["listener.name.sasl_ssl.plain.sasl.jaas.config"] = _jaas_plain(dict([PLAIN_USER]))
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        props["listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config"] = scram
        props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"] = scram
        return props
