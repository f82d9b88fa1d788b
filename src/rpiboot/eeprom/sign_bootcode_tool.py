"""rpi-sign-bootcode: sign (or counter-sign) a second-stage bootloader image.

  rpi-sign-bootcode -c 2712 -i bootcode.bin -o signed.bin -k private.pem [-n 16] [-v 0]
  rpi-sign-bootcode -c 2712 -i bootcode.bin -o signed.bin -p public.pem -H hsm-wrapper
  rpi-sign-bootcode -c 2711 -i bootcode.bin -o signed.bin -k private.pem -m hmac.key
  rpi-sign-bootcode -c 2712 -e signed.bin      (dump the signature blocks)

With no -o, the result goes to stdout base64-encoded; with no -i, the input
is taken base64-encoded from stdin.  ``-v`` is the anti-rollback version
(0-32), not verbosity.  Exit codes: 0 success, 1 error, 2 usage error,
3 missing or unreadable input.

Differences from upstream: only chips 2711 and 2712 are accepted (upstream
silently did nothing for others); keys must be RSA-2048; the HSM wrapper
output is checked to be a 256-byte hex signature; no output file is created
when signing fails; -e on a file without a signature block is an error
(exit 1) rather than printing nothing or garbage.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import sys
from typing import Sequence

from .common import ToolError, atomic_write, read_file, run_tool, write_stdout
from .signing import (Signer, format_signature_block_2711, format_signature_blocks_2712,
                      hsm_signer, key_signer, load_hmac_key, load_private_key, load_rsa_key,
                      has_signature_block_2711, pubkey_bin, sign_bootcode_2711,
                      sign_bootcode_2712, signature_blocks_2712)

PROG = "rpi-sign-bootcode"

DESCRIPTION = """\
Append an RSA signature block to a second-stage bootloader (bootcode.bin,
recovery.bin). To counter-sign a file Raspberry Pi already signed, give it as
input with key number 16. An HSM wrapper is called as 'wrapper -a rsa2048-sha256 FILE' and
must print the PKCS#1 v1.5 signature in hex; the public key must then be given
with -p."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    parser.add_argument("-o", "--output", help="output file (default: base64 on stdout)")
    parser.add_argument("-c", "--chip", required=True, type=int, help="chip number: 2711 or 2712")
    parser.add_argument("-e", "--extract", help="print the signature block(s) of a signed file")
    parser.add_argument("-i", "--input", help="file to sign (default: base64 from stdin)")
    parser.add_argument("-m", "--hmac", help="HMAC key file (2711 only)")
    parser.add_argument("-k", "--private-key", dest="private_key", help="RSA-2048 private key (PEM)")
    parser.add_argument("-p", "--public-key", dest="public_key", help="RSA public key (PEM), for -H")
    parser.add_argument("-n", "--private-keynum", dest="private_keynum", default=0, type=int,
                        help="key number: 0-4 for Raspberry Pi keys, 16 for customer keys")
    parser.add_argument("-H", "--hsm-wrapper", dest="hsm_wrapper", help="HSM wrapper script")
    parser.add_argument("-d", "--debug", action="store_true", help="accepted for compatibility")
    parser.add_argument("-v", "--private-version", dest="private_version", default=0, type=int,
                        help="anti-rollback firmware version, 0-32")
    return parser


def read_input(path: str | None) -> bytes:
    if path is not None:
        return read_file(path, "input file")
    try:
        return base64.b64decode(sys.stdin.read(), validate=False)
    except (binascii.Error, ValueError):
        raise ToolError("stdin is not valid base64") from None


def make_signer(args: argparse.Namespace, digest: str) -> Signer:
    if args.hsm_wrapper:
        return hsm_signer(args.hsm_wrapper)
    if not args.private_key:
        raise ToolError("a private key (-k) or an HSM wrapper (-H) is required", 2)
    return key_signer(load_private_key(args.private_key), digest)


def sign(args: argparse.Namespace) -> bytes:
    if args.chip == 2712:
        if args.hsm_wrapper and not args.public_key:
            raise ToolError("the public key (-p) is required with an HSM wrapper", 2)
        signer = make_signer(args, "sha256")
        key_path = args.public_key if args.hsm_wrapper else args.private_key
        pubkey = pubkey_bin(load_rsa_key(key_path))
        return sign_bootcode_2712(read_input(args.input), signer, pubkey,
                                  args.private_keynum, args.private_version)
    if not args.hmac:
        raise ToolError("HMAC key (-m) required for 2711", 2)
    hmac_key = load_hmac_key(args.hmac)
    # Like upstream, an HSM wrapper is always asked for rsa2048-sha256.
    signer = make_signer(args, "sha1")
    return sign_bootcode_2711(read_input(args.input), signer, hmac_key, args.private_keynum)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.chip not in (2711, 2712):
        raise ToolError(f"unsupported chip {args.chip} (expected 2711 or 2712)", 2)
    if args.extract:
        data = read_file(args.extract, "signed file")
        if args.chip == 2712:
            if not signature_blocks_2712(data):
                raise ToolError(f"no signature block found in '{args.extract}'")
            sys.stdout.write(format_signature_blocks_2712(data))
        else:
            if not has_signature_block_2711(data):
                raise ToolError(f"no signature block found in '{args.extract}'")
            sys.stdout.write(format_signature_block_2711(data))
        return 0
    signed = sign(args)
    if args.output:
        atomic_write(args.output, signed)
    else:
        write_stdout(base64.b64encode(signed))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
