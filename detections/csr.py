"""The subject of a CertificateSigningRequest's ``spec.request``: who the certificate would be.

A CSR's ``spec.request`` is a PEM "CERTIFICATE REQUEST" (PKCS#10), base64-encoded once more
by the API. The subject's common name becomes the user name and its organisations the groups
when the API server signer issues the certificate, so ``O=system:masters`` is a cluster-admin
credential. This module reads just that, with a small bounded DER walk (no crypto library on
the hot path, nothing verified: the signature does not matter to who is being asked for).

>>> subject_of(b"-----BEGIN CERTIFICATE REQUEST-----\\nMAA=\\n-----END") is None
True
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

#: Largest ``spec.request`` read (a CSR with a 4096-bit RSA key is under 2 KB of PEM).
MAX_REQUEST = 16_384

_OID_CN = bytes.fromhex("550403")  # 2.5.4.3 commonName
_OID_O = bytes.fromhex("55040a")  # 2.5.4.10 organizationName
_SEQUENCE, _SET, _OID = 0x30, 0x31, 0x06
_STRINGS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1", 0x1E: "utf-16-be"}


class _Bad(Exception):
    """Not the DER this module reads."""


def _tlv(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the element at ``pos``."""
    if pos + 2 > end:
        raise _Bad
    tag, first = buf[pos], buf[pos + 1]
    if first < 0x80:
        start, length = pos + 2, first
    else:
        n = first & 0x7F
        if not 1 <= n <= 3 or pos + 2 + n > end:
            raise _Bad
        start, length = pos + 2 + n, int.from_bytes(buf[pos + 2 : pos + 2 + n], "big")
    if start + length > end:
        raise _Bad
    return tag, start, start + length


def _children(buf: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    pos = start
    while pos < end:
        tag, s, e = _tlv(buf, pos, end)
        out.append((tag, s, e))
        pos = e
    return out


def _der_of(request: Any) -> bytes:
    """The DER of ``spec.request`` as the audit event holds it (base64 of the PEM), or PEM."""
    if not isinstance(request, (str, bytes)) or len(request) > MAX_REQUEST:
        raise _Bad
    raw = request.encode("ascii", "replace") if isinstance(request, str) else request
    if b"-----BEGIN" not in raw:
        try:
            raw = base64.b64decode(raw, validate=False)
        except (binascii.Error, ValueError):
            raise _Bad from None
    lines = [ln.strip() for ln in raw.splitlines()]
    body = b"".join(ln for ln in lines if ln and not ln.startswith(b"-----"))
    try:
        return base64.b64decode(body, validate=False)
    except (binascii.Error, ValueError):
        raise _Bad from None


def subject_of(request: Any) -> dict[str, Any] | None:
    """``{"commonName": str, "organizations": [str, ...]}`` of a CSR, or None if unreadable.

    >>> import base64
    >>> o = "0603" "55040a" "0c0e" + b"system:masters".hex()  # O=system:masters
    >>> cn = "0603" "550403" "0c03" + b"eve".hex()  # CN=eve
    >>> name = "3027" "3117" "3015" + o + "310c" "300a" + cn
    >>> der = bytes.fromhex("302e" "302c" "020100" + name)
    >>> pem = b"-----BEGIN CERTIFICATE REQUEST-----\\n" + base64.b64encode(der) + b"\\n-----END"
    >>> subject_of(base64.b64encode(pem).decode())
    {'commonName': 'eve', 'organizations': ['system:masters']}
    >>> subject_of("not a csr") is None
    True
    """
    try:
        der = _der_of(request)
        tag, s, e = _tlv(der, 0, len(der))
        if tag != _SEQUENCE:
            raise _Bad
        tag, s, e = _tlv(der, s, e)  # CertificationRequestInfo
        if tag != _SEQUENCE:
            raise _Bad
        parts = _children(der, s, e)
        if len(parts) < 2 or parts[1][0] != _SEQUENCE:
            raise _Bad
        common, orgs = None, []
        for rdn_tag, rs, re_ in _children(der, parts[1][1], parts[1][2]):
            if rdn_tag != _SET:
                raise _Bad
            for atv_tag, as_, ae in _children(der, rs, re_):
                items = _children(der, as_, ae) if atv_tag == _SEQUENCE else []
                if len(items) != 2 or items[0][0] != _OID or items[1][0] not in _STRINGS:
                    raise _Bad
                oid = der[items[0][1] : items[0][2]]
                text = der[items[1][1] : items[1][2]].decode(_STRINGS[items[1][0]], "replace")
                if oid == _OID_CN:
                    common = text
                elif oid == _OID_O:
                    orgs.append(text)
    except _Bad:
        return None
    out: dict[str, Any] = {"organizations": orgs}
    if common is not None:
        out = {"commonName": common, **out}
    return out
