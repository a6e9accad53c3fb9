"""A real Kubernetes API server for the tests: kube-apiserver plus an embedded etcd.

Both binaries are built by ``./dev test`` from ``brokers/k8s/go.mod`` into ``.cache/k8s/bin``
(``KLAXON_K8S_BIN`` points elsewhere). `KubeAPIServer` starts them on free 127.0.0.1 ports in a
work dir it fills itself: a throw-away CA and serving certificate, service-account keys, a
static token file (an admin in ``system:masters`` and a low-privilege user), a
detection-oriented audit policy (`AUDIT_POLICY`) and, when given an `AuditWebhook`, a webhook
kubeconfig so the API server POSTs its own ``audit.k8s.io/v1`` ``EventList`` batches there::

    ca = TestCA(tmp / "ca")
    with KubeAPIServer(tmp / "kube", ca, webhook=AuditWebhook(url, ca.cert_path, "t")) as api:
        api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", ...})

Requests are plain HTTPS with a bearer token (`KubeAPIServer.request`); no kubectl needed.
There is no controller-manager, scheduler or node: objects are stored and audited, pods stay
Pending, and no ``default`` ServiceAccount is made for a namespace (create one before a pod).
Processes reuse `pipeline.brokers`' child handling: own process group, log file, SIGKILL
when the test process dies.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import secrets
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pipeline.brokers import _Child, _ensure_free, _run_blocking, _wait_until, free_port
from pipeline.errors import BrokerError, BrokerNotInstalled

__all__ = [
    "AUDIT_POLICY",
    "DEFAULT_K8S_BIN",
    "AuditWebhook",
    "KubeAPIError",
    "KubeAPIServer",
    "TestCA",
    "k8s_bin_dir",
]

#: Where ``./dev test`` puts ``kube-apiserver`` and ``etcd`` (``KLAXON_K8S_BIN`` overrides).
DEFAULT_K8S_BIN = Path(__file__).resolve().parents[1] / ".cache" / "k8s" / "bin"

ADMIN_USER = "klaxon-admin"
LOW_USER = "klaxon-dev"

#: What a detection pipeline wants from the API server (first matching rule wins):
#: nothing for the chatty leases, events and health probes; only metadata for secrets,
#: configmaps and token requests (their bodies are credentials); full request and response
#: bodies for workloads, exec/attach, RBAC, admission webhooks and certificates; metadata for
#: everything else. RequestReceived is omitted: ResponseComplete carries all of it.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    resources:
      - {group: "coordination.k8s.io", resources: ["leases"]}
      - {group: "", resources: ["events"]}
      - {group: "events.k8s.io", resources: ["events"]}
  - level: None
    nonResourceURLs: ["/healthz*", "/livez*", "/readyz*", "/version", "/metrics"]
  - level: Metadata
    resources:
      - {group: "", resources: ["secrets", "configmaps", "serviceaccounts/token"]}
      - {group: "authentication.k8s.io", resources: ["tokenreviews"]}
  - level: RequestResponse
    resources:
      - group: ""
        resources: ["pods", "pods/exec", "pods/attach", "pods/portforward",
                    "pods/ephemeralcontainers", "serviceaccounts", "namespaces", "nodes/proxy"]
      - {group: "apps"}
      - {group: "batch"}
      - {group: "rbac.authorization.k8s.io"}
      - {group: "admissionregistration.k8s.io"}
      - {group: "certificates.k8s.io"}
      - {group: "authorization.k8s.io"}
  - level: Metadata
"""


def k8s_bin_dir(env: dict[str, str] | None = None) -> Path:
    """The folder holding ``kube-apiserver`` and ``etcd``: ``$KLAXON_K8S_BIN`` or the default.

    >>> k8s_bin_dir({"KLAXON_K8S_BIN": "/opt/k8s"})
    PosixPath('/opt/k8s')
    """
    override = (os.environ if env is None else env).get("KLAXON_K8S_BIN", "").strip()
    return Path(override) if override else DEFAULT_K8S_BIN


class TestCA:
    """A throw-away certificate authority (EC P-256) written to ``directory``.

    ``issue`` makes a server certificate for loopback, signed by it; the API server uses one,
    and a test's webhook receiver can use another so the API server trusts it.
    """

    __test__ = False  # not a test class, despite the name

    def __init__(self, directory: Path, name: str = "klaxon test CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.cert_path = directory / "ca.crt"
        self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, dns: tuple[str, ...] = ("localhost",)) -> tuple[Path, Path]:
        """A serving certificate for 127.0.0.1 (and ``dns`` names): ``(cert_path, key_path)``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        sans += [x509.DNSName(d) for d in dns]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .sign(self._key, hashes.SHA256())
        )
        cert_path = self.directory / f"{name}.crt"
        key_path = self.directory / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(_private_pem(key))
        key_path.chmod(0o600)
        return cert_path, key_path

    def ssl_server_context(self, name: str) -> ssl.SSLContext:
        """A TLS server context with a fresh certificate ``name`` issued by this CA."""
        cert_path, key_path = self.issue(name)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_path, key_path)
        return context

    def ssl_client_context(self) -> ssl.SSLContext:
        """A TLS client context trusting only this CA."""
        return ssl.create_default_context(cafile=str(self.cert_path))


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class AuditWebhook:
    """Where the API server sends its audit batches: an HTTPS URL, the CA that signed its
    certificate, and the bearer token it sends (None: no Authorization header)."""

    url: str
    ca_path: Path
    token: str | None = None

    def kubeconfig(self) -> dict[str, Any]:
        """The ``--audit-webhook-config-file`` contents (kubeconfig; JSON is valid YAML)."""
        user: dict[str, Any] = {} if self.token is None else {"token": self.token}
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "audit-sink",
                    "cluster": {"server": self.url, "certificate-authority": str(self.ca_path)},
                }
            ],
            "users": [{"name": "kube-apiserver", "user": user}],
            "contexts": [
                {"name": "audit", "context": {"cluster": "audit-sink", "user": "kube-apiserver"}}
            ],
            "current-context": "audit",
        }


class KubeAPIError(Exception):
    """The API server answered a request with a status outside 2xx."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        message = body.get("message", body) if isinstance(body, dict) else body
        super().__init__(f"{method} {path}: HTTP {status}: {message}")
        self.status = status
        self.body = body


@dataclass
class KubeAPIServer:
    """kube-apiserver + etcd on free 127.0.0.1 ports; a sync context manager.

    ``work_dir`` receives the certificates, policy, configs, etcd data and the two logs
    (``etcd.log``, ``kube-apiserver.log``). ``admin_token`` belongs to ``klaxon-admin``
    (``system:masters``); ``user_token`` to ``klaxon-dev`` (group ``developers``, no RBAC).
    """

    work_dir: Path
    ca: TestCA
    webhook: AuditWebhook | None = None
    audit_policy: str = AUDIT_POLICY
    batch_max_wait: str = "200ms"
    bin_dir: Path = field(default_factory=k8s_bin_dir)
    start_timeout: float = 90.0
    extra_args: tuple[str, ...] = ()
    admin_token: str = field(default_factory=lambda: secrets.token_hex(16))
    user_token: str = field(default_factory=lambda: secrets.token_hex(16))
    port: int = 0
    _etcd: _Child | None = field(default=None, init=False, repr=False)
    _apiserver: _Child | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        """``https://127.0.0.1:PORT`` of the running API server."""
        if not self.port:
            raise BrokerError("KubeAPIServer is not started")
        return f"https://127.0.0.1:{self.port}"

    @property
    def etcd_log(self) -> Path:
        return self.work_dir / "etcd.log"

    @property
    def apiserver_log(self) -> Path:
        return self.work_dir / "kube-apiserver.log"

    @property
    def pids(self) -> list[int]:
        children = (self._etcd, self._apiserver)
        return [c.pid for c in children if c is not None and c.alive and c.pid is not None]

    def logs(self, lines: int = 40) -> str:
        """The tail of both logs, for a failing test's message."""
        parts = []
        for child in (self._etcd, self._apiserver):
            if child is not None:
                parts.append(f"--- {child.log_path}:\n{child.tail(lines)}")
        return "\n".join(parts)

    # -- lifecycle ----------------------------------------------------------------------

    def _binaries(self) -> tuple[Path, Path]:
        apiserver, etcd = self.bin_dir / "kube-apiserver", self.bin_dir / "etcd"
        for binary in (apiserver, etcd):
            if not os.access(binary, os.X_OK):
                raise BrokerNotInstalled(
                    f"{binary} not found: run `./dev test` once (it builds kube-apiserver and "
                    "etcd from brokers/k8s/go.mod with Go) or set KLAXON_K8S_BIN"
                )
        return apiserver, etcd

    def _write_config(self) -> dict[str, Path]:
        """Certificates, keys, tokens, policy and webhook kubeconfig in ``work_dir``."""
        d = self.work_dir
        d.mkdir(parents=True, exist_ok=True)
        cert, key = self.ca.issue(
            "kube-apiserver",
            dns=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
        )
        signing = ec.generate_private_key(ec.SECP256R1())
        sa_key, sa_pub = d / "service-account.key", d / "service-account.pub"
        sa_key.write_bytes(_private_pem(signing))
        sa_key.chmod(0o600)
        sa_pub.write_bytes(
            signing.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        tokens = d / "tokens.csv"
        tokens.write_text(
            f'{self.admin_token},{ADMIN_USER},uid-admin,"system:masters"\n'
            f'{self.user_token},{LOW_USER},uid-dev,"developers"\n'
        )
        tokens.chmod(0o600)
        policy = d / "audit-policy.yaml"
        policy.write_text(self.audit_policy)
        paths = {
            "cert": cert,
            "key": key,
            "sa_key": sa_key,
            "sa_pub": sa_pub,
            "tokens": tokens,
            "policy": policy,
        }
        if self.webhook is not None:
            paths["webhook"] = d / "audit-webhook.kubeconfig"
            paths["webhook"].write_text(json.dumps(self.webhook.kubeconfig(), indent=2))
        return paths

    def apiserver_argv(self, binary: Path, etcd_port: int, paths: dict[str, Path]) -> list[str]:
        argv = [
            str(binary),
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            "--endpoint-reconciler-type=none",  # else: "may not be in the loopback range"
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--cert-dir={self.work_dir / 'certs'}",  # never /var/run/kubernetes
            f"--tls-cert-file={paths['cert']}",
            f"--tls-private-key-file={paths['key']}",
            f"--client-ca-file={self.ca.cert_path}",
            f"--service-account-key-file={paths['sa_pub']}",
            f"--service-account-signing-key-file={paths['sa_key']}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.96.0.0/24",
            "--authorization-mode=RBAC",
            f"--token-auth-file={paths['tokens']}",
            "--allow-privileged=true",  # else privileged pods are refused (422)
            "--profiling=false",
            f"--audit-policy-file={paths['policy']}",
        ]
        if "webhook" in paths:
            argv += [
                f"--audit-webhook-config-file={paths['webhook']}",
                "--audit-webhook-mode=batch",
                f"--audit-webhook-batch-max-wait={self.batch_max_wait}",
                "--audit-webhook-initial-backoff=500ms",
            ]
        return [*argv, *self.extra_args]

    def start(self) -> Self:
        """Start etcd, then kube-apiserver; wait for ``/readyz``. Raises `BrokerError`."""
        _run_blocking(self._astart)
        return self

    async def _astart(self) -> None:
        if self._apiserver is not None and self._apiserver.alive:
            return
        apiserver, etcd = self._binaries()
        paths = self._write_config()
        etcd_port, peer_port, self.port = self._three_ports()
        _ensure_free(etcd_port, peer_port, self.port)
        try:
            self._etcd = _Child(
                [
                    str(etcd),
                    f"--data-dir={self.work_dir / 'etcd-data'}",
                    f"--client-port={etcd_port}",
                    f"--peer-port={peer_port}",
                ],
                self.etcd_log,
            )
            self._etcd.spawn()
            await _wait_until(
                lambda: asyncio.to_thread(self._etcd_healthy, etcd_port),
                [self._etcd],
                30.0,
                "etcd (embedded)",
            )
            self._apiserver = _Child(
                self.apiserver_argv(apiserver, etcd_port, paths), self.apiserver_log
            )
            self._apiserver.spawn()
            await _wait_until(
                lambda: asyncio.to_thread(self._ready),
                [self._etcd, self._apiserver],
                self.start_timeout,
                "kube-apiserver",
            )
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _three_ports() -> tuple[int, int, int]:
        ports: set[int] = set()
        while len(ports) < 3:
            ports.add(free_port())
        a, b, c = sorted(ports)
        return a, b, c

    @staticmethod
    def _etcd_healthy(port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                return bool(json.loads(resp.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _ready(self) -> bool:
        try:
            status, body = self.request("GET", "/readyz", raw=True, timeout=3)
        except OSError:  # refused, reset, TLS not up yet (ssl.SSLError is an OSError)
            return False
        return status == 200 and body == b"ok"

    def stop(self) -> None:
        """SIGTERM kube-apiserver then etcd (SIGKILL after 10 s); the work dir stays."""
        for child in (self._apiserver, self._etcd):
            if child is not None:
                child.terminate(timeout=10.0)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- requests -----------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        raw: bool = False,
        timeout: float = 30.0,
    ) -> tuple[int, Any]:
        """``(status, decoded JSON body)`` of an HTTPS request (``raw``: body bytes).

        Authenticated as the admin unless ``token`` is given (``""``: anonymous). Error
        statuses are returned, not raised.
        """
        token = self.admin_token if token is None else token
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        req.add_header("Accept", "application/json")
        context = self.ca.ssl_client_context()
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
                status, payload = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        if raw:
            return status, payload
        try:
            return status, json.loads(payload) if payload else None
        except ValueError:
            return status, payload.decode("utf-8", "replace")

    def _ok(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        status, decoded = self.request(method, path, body, token=token)
        if not 200 <= status < 300:
            raise KubeAPIError(method, path, status, decoded)
        return decoded

    def create(self, path: str, body: dict[str, Any], *, token: str | None = None) -> Any:
        """POST ``body`` to a collection path; the created object. Raises `KubeAPIError`."""
        return self._ok("POST", path, body, token)

    def get(self, path: str, *, token: str | None = None) -> Any:
        return self._ok("GET", path, token=token)

    def list(self, path: str, *, token: str | None = None) -> Any:
        """GET a collection path; the ``…List`` object. Raises `KubeAPIError`."""
        return self._ok("GET", path, token=token)

    def delete(self, path: str, *, token: str | None = None) -> Any:
        return self._ok("DELETE", path, token=token)
