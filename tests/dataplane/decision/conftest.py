from __future__ import annotations

import pytest

from dataplane.pki import CertificateAuthority
from dataplane.signing import generate_signing_key


@pytest.fixture(scope="session")
def signing_key():
    return generate_signing_key()


@pytest.fixture(scope="session")
def ca():
    return CertificateAuthority.create("accesspoint test client CA")
