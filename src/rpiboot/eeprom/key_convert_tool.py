"""rpi-bootloader-key-convert: RSA key PEM <-> bootloader ``pubkey.bin`` (264 bytes).

  rpi-bootloader-key-convert [--output pubkey.bin] key.pem
  rpi-bootloader-key-convert --inform bin [--output key.pem] pubkey.bin
  rpi-bootloader-key-convert --print-key-hash key.pem

``pubkey.bin`` is N (256 bytes little-endian) followed by e (8 bytes
little-endian).  ``--print-key-hash`` prints the SHA-256 of pubkey.bin, which
is the value the bootloader programs into OTP as CUSTOMER_KEY_HASH (and logs
as "Customer key hash"); with it the converted key is only written when
--output is given.  The PEM input may be a public or a private key; only the
public part is used.  A ``--inform bin`` input must be exactly 264 bytes
and hold a 2048-bit modulus.  Exit codes: 0 success, 1 error, 2 usage error,
3 missing or unreadable input.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .common import ToolError, atomic_write, read_file, run_tool, write_stdout
from .signing import key_hash, load_rsa_key, public_key_from_bin, public_pem, pubkey_bin

PROG = "rpi-bootloader-key-convert"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Turn an RSA-2048 PEM key into the 264-byte pubkey.bin layout the "
                    "Raspberry Pi bootloader reads, or a pubkey.bin back into a PEM public key.")
    parser.add_argument("input", nargs="+", help="input key file (only the first is used)")
    parser.add_argument("--inform", default="pem", help="input format: pem (default) or bin")
    parser.add_argument("--output", help="output file (default: stdout)")
    parser.add_argument("--print-key-hash", action="store_true",
                        help="print the customer key hash (sha256 of pubkey.bin, as stored in OTP)")
    return parser


def convert(inform: str, path: str) -> tuple[bytes, bytes]:
    """Return (converted output, pubkey.bin bytes) for the input key file."""
    if inform == "pem":
        binary = pubkey_bin(load_rsa_key(path))
        return binary, binary
    if inform == "bin":
        data = read_file(path, "key file")
        key = public_key_from_bin(data, path, exact=True)
        return public_pem(key), data[:264]
    raise ToolError(f"unknown input format '{inform}' (expected pem or bin)", 2)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    output, binary = convert(args.inform, args.input[0])
    if args.output:
        atomic_write(args.output, output)
    elif not args.print_key_hash:
        write_stdout(output)
    if args.print_key_hash:
        print(key_hash(binary))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
