"""Fixtures for the EEPROM tool tests.

Upstream inputs and golden outputs live in ``shared/`` beside the repository
checkout (``<repo>/../shared``).  Tests needing them skip when it is absent;
the synthetic-image tests run everywhere.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from eeprom_helpers import FIXTURES, GOLDEN_EPOCH  # noqa: E402


@pytest.fixture(scope="session")
def golden() -> Path:
    path = FIXTURES / "golden"
    if not path.is_dir():
        pytest.skip(f"golden fixtures not found at {path}")
    return path


@pytest.fixture(scope="session")
def upstream() -> Path:
    path = FIXTURES / "upstream"
    if not path.is_dir():
        pytest.skip(f"upstream fixtures not found at {path}")
    return path


@pytest.fixture
def golden_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", GOLDEN_EPOCH)


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def key_files(tmp_path_factory: pytest.TempPathFactory, rsa_key: rsa.RSAPrivateKey) -> dict[str, Path]:
    """PEM files: 'private' (PKCS#8), 'private_pkcs1', 'public', 'small' (1024-bit)."""
    directory = tmp_path_factory.mktemp("keys")
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    files = {
        "private": rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()),
        "private_pkcs1": rsa_key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.TraditionalOpenSSL,
                                               serialization.NoEncryption()),
        "public": rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo),
        "small": small.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = directory / f"{name}.pem"
        paths[name].write_bytes(data)
    return paths


