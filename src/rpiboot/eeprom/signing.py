"""RSA keys, signatures, ``.sig`` files and signed-bootcode trailers.

Formats:

* ``pubkey.bin`` (264 bytes): RSA modulus N as 256 bytes little-endian, then
  the public exponent e as 8 bytes little-endian.  Its SHA-256 is the OTP
  ``CUSTOMER_KEY_HASH``.
* ``.sig`` file: ``<sha256 hex>\\nts: <epoch>\\n[target-soc: <soc>\\n]``
  ``[rsa2048: <hex PKCS#1 v1.5 SHA-256 signature>\\n]``.
* BCM2712 signed bootcode: ``payload | len:u32 | keynum:u32 | version:u32 |
  RSA-2048 signature (256) | pubkey.bin (264)``, little-endian words; the
  signature covers everything before it.  Counter-signing appends a second
  trailer, so the Raspberry Pi block is always the innermost one.
* BCM2711 signed bootcode: ``payload | len | keynum | RSA signature of SHA-1
  (256) | HMAC-SHA1 (20)`` over everything before the HMAC.
"""

from __future__ import annotations

import binascii
import os
import struct
import time
from typing import TYPE_CHECKING, Callable, NamedTuple, Union

from .common import EXIT_MISSING_INPUT, ToolError, read_file

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

# `cryptography` (and hashlib, subprocess, tempfile) are imported inside the
# functions that use them: printing an image's config must not pay for loading
# them (see benchmarks/bench_eeprom_startup.py and the README's figures).

RSA_BITS = 2048
SIGNATURE_LEN = 256
PUBKEY_BIN_LEN = 264
MAX_SIGNED_BOOTCODE_SIZE = 110 * 1024
CUSTOMER_KEYNUM = 16
HMAC_KEY_HEX_LEN = 40
HSM_ALGORITHM = "rsa2048-sha256"

RsaKey = Union["rsa.RSAPrivateKey", "rsa.RSAPublicKey"]
Signer = Callable[[bytes], bytes]

# -- keys -------------------------------------------------------------------


def load_rsa_key(path: str) -> RsaKey:
    """Load a PEM (or DER) RSA private or public key; refuse anything else."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    data = read_file(path, "key file")
    key = _parse_key(data, path)
    if not isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        raise ToolError(f"key '{path}' is not an RSA key")
    if key.key_size != RSA_BITS:
        raise ToolError(f"key '{path}' has {key.key_size} bits; only {RSA_BITS}-bit RSA keys are supported")
    return key


def _parse_key(data: bytes, path: str) -> object:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    loaders = (
        lambda: serialization.load_pem_private_key(data, password=None),
        lambda: serialization.load_pem_public_key(data),
        lambda: serialization.load_der_private_key(data, password=None),
        lambda: serialization.load_der_public_key(data),
    )
    for load in loaders:
        try:
            return load()
        except TypeError:
            raise ToolError(f"key '{path}' is encrypted; only unencrypted keys are supported") from None
        except (ValueError, UnsupportedAlgorithm):
            continue
    raise ToolError(f"'{path}' is not a PEM or DER RSA key")


def load_private_key(path: str) -> rsa.RSAPrivateKey:
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = load_rsa_key(path)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ToolError(f"key '{path}' is a public key; a private key is needed to sign")
    return key


def public_key_of(key: RsaKey) -> rsa.RSAPublicKey:
    from cryptography.hazmat.primitives.asymmetric import rsa
    return key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key


def pubkey_bin(key: RsaKey) -> bytes:
    """The 264-byte bootloader form of the public part of key."""
    numbers = public_key_of(key).public_numbers()
    if numbers.n.bit_length() > 8 * 256 or numbers.e.bit_length() > 64:
        raise ToolError("RSA key does not fit the 264-byte bootloader format")
    return numbers.n.to_bytes(256, "little") + numbers.e.to_bytes(8, "little")


def public_key_from_bin(data: bytes, name: str = "pubkey.bin", exact: bool = False) -> rsa.RSAPublicKey:
    """Decode the bootloader key format; exact=True also demands exactly 264
    bytes and a 2048-bit modulus (for standalone pubkey.bin files)."""
    if len(data) < PUBKEY_BIN_LEN or (exact and len(data) != PUBKEY_BIN_LEN):
        raise ToolError(f"{name}: expected {PUBKEY_BIN_LEN} bytes, got {len(data)}")
    from cryptography.hazmat.primitives.asymmetric import rsa
    n = int.from_bytes(data[:256], "little")
    e = int.from_bytes(data[256:PUBKEY_BIN_LEN], "little")
    if exact and n.bit_length() != RSA_BITS:
        raise ToolError(f"{name}: the modulus is {n.bit_length()} bits, expected {RSA_BITS}")
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as err:
        raise ToolError(f"{name}: not a valid RSA public key ({err})") from None


def public_pem(key: RsaKey) -> bytes:
    """SubjectPublicKeyInfo PEM without a trailing newline (as upstream prints it)."""
    from cryptography.hazmat.primitives import serialization
    pem = public_key_of(key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.rstrip(b"\n")


def key_hash(pubkey: bytes) -> str:
    """OTP CUSTOMER_KEY_HASH: hex SHA-256 of the 264-byte pubkey.bin."""
    import hashlib
    return hashlib.sha256(pubkey).hexdigest()


# -- signatures -------------------------------------------------------------


def sign_pkcs1v15(key: rsa.RSAPrivateKey, data: bytes, digest: str = "sha256") -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    algorithm = hashes.SHA256() if digest == "sha256" else hashes.SHA1()
    return key.sign(data, padding.PKCS1v15(), algorithm)


def verify_pkcs1v15(key: RsaKey, data: bytes, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    try:
        public_key_of(key).verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def key_signer(key: rsa.RSAPrivateKey, digest: str = "sha256") -> Signer:
    return lambda data: sign_pkcs1v15(key, data, digest)


def run_hsm_wrapper(wrapper: str, path: str) -> str:
    """Run ``wrapper -a rsa2048-sha256 path``; return its hex signature (stripped)."""
    import subprocess
    try:
        result = subprocess.run([wrapper, "-a", HSM_ALGORITHM, path],
                                capture_output=True, check=False)
    except FileNotFoundError:
        raise ToolError(f"HSM wrapper '{wrapper}' not found", EXIT_MISSING_INPUT) from None
    except OSError as err:
        raise ToolError(f"cannot run HSM wrapper '{wrapper}': {err.strerror or err}") from None
    if result.returncode != 0:
        detail = result.stderr.decode("utf-8", "replace").strip().splitlines()
        suffix = f": {detail[-1]}" if detail else ""
        raise ToolError(f"HSM wrapper '{wrapper}' failed with exit code {result.returncode}{suffix}")
    text = result.stdout.decode("ascii", "replace").strip()
    try:
        signature = bytes.fromhex(text)
    except ValueError:
        raise ToolError(f"HSM wrapper '{wrapper}' did not print a hex signature") from None
    if len(signature) != SIGNATURE_LEN:
        raise ToolError(f"HSM wrapper '{wrapper}' returned a {len(signature)}-byte signature, "
                        f"expected {SIGNATURE_LEN}")
    return text


def hsm_signer(wrapper: str) -> Signer:
    """A Signer that hands the data to the wrapper through a private temp file."""
    def sign(data: bytes) -> bytes:
        import tempfile
        fd, tmp_name = tempfile.mkstemp(prefix="rpi-sign-")
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(data)
            return bytes.fromhex(run_hsm_wrapper(wrapper, tmp_name))
        finally:
            os.unlink(tmp_name)
    return sign


# -- .sig files -------------------------------------------------------------


def sig_timestamp() -> str:
    """SOURCE_DATE_EPOCH when set and non-empty, else the current time."""
    env = os.environ.get("SOURCE_DATE_EPOCH", "")
    if not env:
        return str(int(time.time()))
    # Only plain decimal digits: the value is copied into the .sig text as is.
    if not (env.isascii() and env.isdigit()):
        raise ToolError(f"SOURCE_DATE_EPOCH must be a whole number of seconds, not {env!r}")
    return env


def make_sig_file(data: bytes, timestamp: str, target_soc: str = "",
                  rsa_hex: str = "") -> str:
    import hashlib
    return sig_text(hashlib.sha256(data).hexdigest(), timestamp, target_soc, rsa_hex)


def sig_text(sha256_hex: str, timestamp: str, target_soc: str = "", rsa_hex: str = "") -> str:
    """The body of an rpi-eeprom-digest .sig file for content with this SHA-256."""
    lines = [sha256_hex, f"ts: {timestamp}"]
    if target_soc:
        lines.append(f"target-soc: {target_soc}")
    if rsa_hex:
        lines.append(f"rsa2048: {rsa_hex}")
    return "\n".join(lines) + "\n"


def sig_file_signature(text: str) -> bytes | None:
    """The raw rsa2048 signature of a .sig file, or None if it has none."""
    for line in text.splitlines():
        if "rsa2048" in line:
            fields = line.split(" ")
            value = fields[1] if len(fields) > 1 else line
            try:
                return binascii.unhexlify(value.strip())
            except (binascii.Error, ValueError):
                return b""
    return None


# -- signed bootcode --------------------------------------------------------


def _check_keynum(keynum: int) -> None:
    if not (0 <= keynum <= 4 or keynum == CUSTOMER_KEYNUM):
        raise ToolError(f"bad key number {keynum}: must be 0-4 or {CUSTOMER_KEYNUM}")


def _check_size(image: bytes) -> bytes:
    if len(image) > MAX_SIGNED_BOOTCODE_SIZE:
        raise ToolError(f"signed binary size {len(image)} is too large; "
                        f"maximum size {MAX_SIGNED_BOOTCODE_SIZE}")
    return image


def sign_bootcode_2712(payload: bytes, signer: Signer, pubkey: bytes,
                       keynum: int = 0, version: int = 0) -> bytes:
    """Append a BCM2712 signature trailer (counter-signs an already signed file)."""
    _check_keynum(keynum)
    if not 0 <= version <= 32:
        raise ToolError(f"bad version number {version}: must be between 0-32")
    body = payload + struct.pack("<iii", len(payload), keynum, version)
    return _check_size(body + _checked_signature(signer(body)) + pubkey)


def sign_bootcode_2711(payload: bytes, signer: Signer, hmac_key: bytes,
                       keynum: int = 0) -> bytes:
    _check_keynum(keynum)
    body = payload + struct.pack("<ii", len(payload), keynum)
    import hashlib
    import hmac
    body += _checked_signature(signer(body))
    return _check_size(body + hmac.new(hmac_key, body, hashlib.sha1).digest())


def _checked_signature(signature: bytes) -> bytes:
    if len(signature) != SIGNATURE_LEN:
        raise ToolError(f"signature is {len(signature)} bytes, expected {SIGNATURE_LEN}")
    return signature


def load_hmac_key(path: str) -> bytes:
    text = read_file(path, "HMAC key file").decode("ascii", "replace").strip()
    if len(text) != HMAC_KEY_HEX_LEN:
        raise ToolError(f"bad HMAC key length {len(text)}, expected {HMAC_KEY_HEX_LEN}")
    try:
        import base64
        return base64.b16decode(text, casefold=True)
    except binascii.Error:
        raise ToolError(f"HMAC key in '{path}' is not hex") from None


class SignatureBlock2712(NamedTuple):
    length: int
    keynum: int
    version: int
    signature: bytes
    pubkey: bytes

    @property
    def sig_type(self) -> str | None:
        if 0 <= self.keynum < 4:
            return "rpi"
        if self.keynum == CUSTOMER_KEYNUM:
            return "customer"
        return None


BLOCK_2712_LEN = 12 + SIGNATURE_LEN + PUBKEY_BIN_LEN


def signature_blocks_2712(data: bytes) -> list[SignatureBlock2712]:
    """Signature trailers from the outside in, stopping at the RPi block."""
    blocks: list[SignatureBlock2712] = []
    end = len(data)
    for _ in range(2):
        start = end - BLOCK_2712_LEN
        if start < 0:
            break
        length, keynum, version = struct.unpack_from("<iii", data, start)
        sig_start = start + 12
        block = SignatureBlock2712(length, keynum, version,
                                   data[sig_start:sig_start + SIGNATURE_LEN],
                                   data[sig_start + SIGNATURE_LEN:end])
        if block.sig_type is None:
            break
        blocks.append(block)
        if block.sig_type == "rpi":
            break
        end = start
    return blocks


def format_signature_blocks_2712(data: bytes) -> str:
    out: list[str] = []
    for block in signature_blocks_2712(data):
        out += [f"sig_type: {block.sig_type}", f"length: {block.length}",
                f"keynum: {block.keynum}", f"version: {block.version}",
                f"rsa_sig: {block.signature.hex()}", f"pubkey_n: {block.pubkey[:256].hex()}",
                f"pubkey_e: {block.pubkey[256:].hex()}",
                public_pem(public_key_from_bin(block.pubkey, "signature block")).decode()]
        if block.sig_type != "rpi":
            out.append("")
    return "".join(line + "\n" for line in out)


def has_signature_block_2711(data: bytes) -> bool:
    """True when the trailer's length field points exactly at the trailer itself."""
    header = len(data) - 20 - SIGNATURE_LEN - 8
    if header < 0:
        return False
    length, keynum = struct.unpack_from("<ii", data, header)
    return length == header and (0 <= keynum <= 4 or keynum == CUSTOMER_KEYNUM)


def format_signature_block_2711(data: bytes) -> str:
    if len(data) < 8 + SIGNATURE_LEN + 20:
        raise ToolError(f"file too small for a 2711 signature block ({len(data)} bytes)")
    hmac_offset = len(data) - 20
    rsa_offset = hmac_offset - SIGNATURE_LEN
    length, keynum = struct.unpack_from("<ii", data, rsa_offset - 8)
    return (f"length: {length}\nkeynum: {keynum}\n"
            f"rsa_sig: {data[rsa_offset:hmac_offset].hex()}\n"
            f"hmac_sha1: {data[hmac_offset:].hex()}\n")
