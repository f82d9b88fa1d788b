"""What the virtual firmware needs to check signatures, standard library only.

* ``.sig`` files as rpi-eeprom-digest writes them: ``<sha256 hex>`` on the first line, then
  ``key: value`` lines (``ts``, ``target-soc``, ``rsa2048`` = hex PKCS#1 v1.5 SHA-256 signature).
* ``pubkey.bin``: RSA modulus as 256 bytes little-endian then the exponent as 8 bytes
  little-endian; its SHA-256 is what OTP holds as the customer key hash.
* BCM2712 signed bootcode: ``payload | len | keynum | version | signature (256) | pubkey.bin``
  (u32 little-endian words); the signature covers everything before it.
* RSA keys in PEM (public or private, PKCS#1 or PKCS#8/SPKI), read with a minimal DER walk.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

PUBKEY_LEN, SIGNATURE_LEN = 264, 256
# DER DigestInfo prefix for SHA-256 (RFC 8017, section 9.2, note 1)
SHA256_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")


@dataclass(frozen=True)
class SigFile:
    sha256: str
    fields: dict[str, str]

    @property
    def rsa2048(self) -> bytes | None:
        text = self.fields.get("rsa2048", "")
        try:
            return bytes.fromhex(text) if text else None
        except ValueError:
            return None


def parse_sig(data: bytes) -> SigFile | None:
    """A ``.sig`` file, or None when the first line is not a SHA-256 in hex."""
    lines = data.decode("ascii", errors="replace").splitlines()
    if not lines or not re.fullmatch(r"[0-9a-fA-F]{64}", lines[0].strip()):
        return None
    fields = {}
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return SigFile(lines[0].strip().lower(), fields)


def pubkey_bin(modulus: int, exponent: int) -> bytes:
    return modulus.to_bytes(256, "little") + exponent.to_bytes(8, "little")


def key_from_pubkey_bin(data: bytes) -> tuple[int, int]:
    if len(data) != PUBKEY_LEN:
        raise ValueError(f"pubkey.bin must be {PUBKEY_LEN} bytes, not {len(data)}")
    return int.from_bytes(data[:256], "little"), int.from_bytes(data[256:], "little")


def verify_sha256(pubkey: bytes, message: bytes, signature: bytes) -> bool:
    """RSA PKCS#1 v1.5 signature of SHA-256(message) by the key in ``pubkey`` (pubkey.bin)."""
    modulus, exponent = key_from_pubkey_bin(pubkey)
    size = (modulus.bit_length() + 7) // 8
    if len(signature) != size or int.from_bytes(signature, "big") >= modulus:
        return False
    decoded = pow(int.from_bytes(signature, "big"), exponent, modulus).to_bytes(size, "big")
    digest_info = SHA256_PREFIX + hashlib.sha256(message).digest()
    expected = b"\x00\x01" + b"\xff" * (size - len(digest_info) - 3) + b"\x00" + digest_info
    return decoded == expected


def bootcode_2712_trailer(data: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(signed part, signature, pubkey.bin) of the outermost signature block, or None."""
    if len(data) < PUBKEY_LEN + SIGNATURE_LEN + 12:
        return None
    pubkey = data[-PUBKEY_LEN:]
    signature = data[-PUBKEY_LEN - SIGNATURE_LEN:-PUBKEY_LEN]
    return data[:-PUBKEY_LEN - SIGNATURE_LEN], signature, pubkey


CUSTOMER_KEYNUM = 16
"""Key number of a customer counter-signature block (rpi-sign-bootcode -n 16)."""


def bootcode_2712_keynum(data: bytes) -> int | None:
    """The key number in the outermost signature block's header, or None when too short."""
    header = len(data) - PUBKEY_LEN - SIGNATURE_LEN - 12
    if header < 0:
        return None
    return int.from_bytes(data[header + 4:header + 8], "little", signed=True)


def pubkey_from_pem(text: bytes) -> bytes:
    """pubkey.bin of the RSA key in a PEM file (public or private key)."""
    match = re.search(rb"-----BEGIN [A-Z ]+-----(.*?)-----END", text, re.S)
    if not match:
        raise ValueError("not a PEM key")
    integers = _der_integers(base64.b64decode(b"".join(match.group(1).split())))
    for position, value in enumerate(integers[:-1]):
        if value.bit_length() > 1000:
            return pubkey_bin(value, integers[position + 1])
    raise ValueError("no RSA modulus in the PEM key")


def _der_integers(data: bytes) -> list[int]:
    """Every INTEGER in a DER structure, in order, looking inside BIT and OCTET STRINGs."""
    found: list[int] = []
    position = 0
    while position + 2 <= len(data):
        tag, length, start = data[position], data[position + 1], position + 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(data[start:start + count], "big")
            start += count
        body = data[start:start + length]
        if tag == 0x02:
            found.append(int.from_bytes(body, "big"))
        elif tag in (0x30, 0x04):
            found += _der_integers(body)
        elif tag == 0x03:
            found += _der_integers(body[1:])
        position = start + length
    return found
