"""SHA-512 crypt ("$6$", as ``openssl passwd -6`` and ``mkpasswd -m sha-512``).

Pure Python, following Ulrich Drepper's published SHA-crypt specification, so
it works where the ``crypt`` module is gone (Python 3.13) or lacks $6$. Used
to turn a plain password given to the profile into the crypt(3) string the
first-boot files carry; Raspberry Pi OS accepts $6$ hashes for login.
"""

from __future__ import annotations

import hashlib
import secrets

_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DEFAULT_ROUNDS = 5000
# Byte order in which the spec encodes the 64-byte digest, three bytes at a time.
_ORDER = [(i % 63, (i + 21) % 63, (i + 42) % 63) for i in range(0, 21 * 22, 22)]


def hash_password(password: str, *, salt: str | None = None, rounds: int | None = None) -> str:
    """The "$6$salt$hash" crypt string for ``password`` (random 16-character salt by default)."""
    if salt is None:
        salt = "".join(secrets.choice(_ALPHABET) for _ in range(16))
    if not salt or any(c not in _ALPHABET for c in salt):
        raise ValueError("salt must be non-empty and use only [./0-9A-Za-z]")
    salt = salt[:16]
    if rounds is not None and not 1000 <= rounds <= 999_999_999:
        raise ValueError("rounds must be between 1000 and 999999999")
    digest = _sha512_crypt(password.encode("utf-8"), salt.encode("ascii"), rounds or _DEFAULT_ROUNDS)
    prefix = f"$6$rounds={rounds}$" if rounds is not None else "$6$"
    return f"{prefix}{salt}${_encode(digest)}"


def _sha512_crypt(pw: bytes, salt: bytes, rounds: int) -> bytes:
    sha = hashlib.sha512
    alternate = sha(pw + salt + pw).digest()
    a = sha(pw + salt)
    a.update(_repeat(alternate, len(pw)))
    length = len(pw)
    while length:
        a.update(alternate if length & 1 else pw)
        length >>= 1
    current = a.digest()
    p_seq = _repeat(sha(pw * len(pw)).digest(), len(pw))
    s_seq = _repeat(sha(salt * (16 + current[0])).digest(), len(salt))
    for r in range(rounds):
        c = sha(p_seq if r & 1 else current)
        if r % 3:
            c.update(s_seq)
        if r % 7:
            c.update(p_seq)
        c.update(current if r & 1 else p_seq)
        current = c.digest()
    return current


def _repeat(block: bytes, length: int) -> bytes:
    return (block * (length // len(block) + 1))[:length]


def _encode(digest: bytes) -> str:
    out = []
    for b2, b1, b0 in _ORDER:
        out.append(_b64(digest[b2] << 16 | digest[b1] << 8 | digest[b0], 4))
    out.append(_b64(digest[63], 2))
    return "".join(out)


def _b64(value: int, count: int) -> str:
    chars = []
    for _ in range(count):
        chars.append(_ALPHABET[value & 0x3F])
        value >>= 6
    return "".join(chars)
