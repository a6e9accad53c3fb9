"""`detections.csr`: the subject of a CSR's spec.request, as the API server signer reads it."""

from __future__ import annotations

import base64

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from detections.csr import MAX_REQUEST, subject_of

KEY = ec.generate_private_key(ec.SECP256R1())
#: At most 16 characters: even of 4 bytes each within X.509's 64-byte bound on a name, which
#: `cryptography` (the reference) enforces.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=16)


def spec_request(common: str | None, orgs: list[str]) -> str:
    """spec.request as the audit event shows it: base64 of the PEM."""
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    if common is not None:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common))
    attrs.append(x509.NameAttribute(NameOID.COUNTRY_NAME, "NL"))
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    pem = csr.sign(KEY, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    return base64.b64encode(pem).decode()


@settings(max_examples=60, deadline=None)
@given(common=st.none() | TEXT, orgs=st.lists(TEXT, max_size=3))
def test_subject_agrees_with_cryptography(common: str | None, orgs: list[str]) -> None:
    """Common name and organisations come out as a real X.509 library wrote them."""
    subject = subject_of(spec_request(common, orgs))
    assert subject is not None
    assert subject.get("commonName") == common
    assert subject["organizations"] == orgs


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_is_unreadable_not_an_error(data: bytes) -> None:
    """Any bytes, raw or PEM-wrapped, give a subject or None; never an exception."""
    pem = b"-----BEGIN CERTIFICATE REQUEST-----\n" + base64.b64encode(data) + b"\n-----END"
    for value in (data, base64.b64encode(pem).decode(), pem):
        result = subject_of(value)
        assert result is None or isinstance(result, dict)


def test_oversized_requests_are_not_read() -> None:
    """A request above MAX_REQUEST is not decoded at all."""
    assert subject_of("A" * (MAX_REQUEST + 1)) is None
    assert subject_of(spec_request("eve", ["system:masters"])) == {
        "commonName": "eve",
        "organizations": ["system:masters"],
    }
