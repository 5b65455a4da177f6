import os
import stat

import pytest

from dataplane.pki import key_pem
from dataplane.signing import (generate_signing_key, key_id, load_private_key, load_public_key,
                               write_private_key, write_public_key)


def test_keys_round_trip_through_pem_files(tmp_path):
    key = generate_signing_key()
    write_private_key(key, tmp_path / "signing.key")
    write_public_key(key.public_key(), tmp_path / "signing.pub")

    assert stat.S_IMODE(os.stat(tmp_path / "signing.key").st_mode) == 0o600
    assert key_id(load_private_key(tmp_path / "signing.key").public_key()) == key_id(key.public_key())
    assert key_id(load_public_key(tmp_path / "signing.pub")) == key_id(key.public_key())


def test_private_key_file_is_tightened_when_it_already_exists(tmp_path):
    path = tmp_path / "signing.key"
    path.write_bytes(b"")
    path.chmod(0o644)
    write_private_key(generate_signing_key(), path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_key_id_is_short_hex_and_differs_between_keys():
    first, second = key_id(generate_signing_key().public_key()), key_id(generate_signing_key().public_key())
    assert len(first) == 16 and int(first, 16) >= 0
    assert first != second


def test_loading_a_non_ed25519_key_is_refused(tmp_path, ca):
    (tmp_path / "ec.key").write_bytes(key_pem(ca.key))
    with pytest.raises(ValueError, match="not an Ed25519"):
        load_private_key(tmp_path / "ec.key")
