"""Agent identities, as a cluster's `agent_identities` allow-list in the snapshot names them.

A verified agent certificate has two: `cn:<subject common name>` (survives renewal with a new
key) and `spki-sha256:<hex SHA-256 of the DER SubjectPublicKeyInfo>` (pins one key). The gateway
accepts a tunnel for cluster X only when one of them is on X's list (an empty list: no agent).
"""
from __future__ import annotations

import hashlib
import re

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

CN_PREFIX = "cn:"
SPKI_PREFIX = "spki-sha256:"
_SPKI_HEX = re.compile(r"^[0-9a-f]{64}$")


def spki_sha256(cert: x509.Certificate) -> str:
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def certificate_identities(cert: x509.Certificate) -> frozenset[str]:
    found = {SPKI_PREFIX + spki_sha256(cert)}
    for attribute in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        if isinstance(attribute.value, str) and attribute.value:
            found.add(CN_PREFIX + attribute.value)
    return frozenset(found)


def identity_problem(value: str) -> str | None:
    """Why `value` is not a valid allow-list entry (for snapshot validation), or None."""
    if value.startswith(CN_PREFIX):
        name = value[len(CN_PREFIX):]
        if not name or not name.isprintable():
            return "cn: must be followed by a printable common name"
        return None
    if value.startswith(SPKI_PREFIX):
        if not _SPKI_HEX.match(value[len(SPKI_PREFIX):]):
            return "spki-sha256: must be followed by 64 lower-case hex digits"
        return None
    return "must start with cn: or spki-sha256:"


def allowed(identities: frozenset[str], allow_list) -> bool:
    return not identities.isdisjoint(allow_list)
