"""rpi-eeprom-digest: create or verify ``.sig`` files for bootloader images/configs.

  rpi-eeprom-digest [-c SOC] [-k private.pem | -H wrapper] -i IMAGE -o OUTPUT
  rpi-eeprom-digest -k public.pem -i IMAGE -v SIGFILE

Exit codes: 0 success / "Verified OK"; 1 error or "Verification failure";
2 usage error; 3 missing or unreadable input (file, key, HSM wrapper).  The ``ts:`` line uses $SOURCE_DATE_EPOCH when it is set and
non-empty, else the current time.

Differences from upstream: keys must be RSA-2048 PEM/DER files (PKCS#11
URIs are not supported, use an HSM wrapper); the HSM wrapper output is
checked to be a 256-byte hex signature; missing -i/-o is a usage error
(exit 2) instead of printing the help; -c accepts only 2711 or 2712 and
SOURCE_DATE_EPOCH only digits, so neither can add lines to the .sig file; a
failed check says so on stderr as "rpi-eeprom-digest: error: ..." (upstream
printed "FILE not verified") while stdout still reads "Verification failure".
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .common import ToolError, atomic_write, read_file, run_tool
from .signing import (load_private_key, load_rsa_key, make_sig_file, run_hsm_wrapper,
                      sig_file_signature, sig_timestamp, sign_pkcs1v15, verify_pkcs1v15)

PROG = "rpi-eeprom-digest"

USAGE_LINE = "rpi-eeprom-digest [-c SOC] [-k KEY | -H WRAPPER] -i FILE (-o SIGFILE | -v SIGFILE)"

USAGE = f"""\
usage: {USAGE_LINE}

Write a .sig file for FILE: its SHA-256, a "ts:" timestamp and, when a key or
HSM wrapper is given, an RSA-2048 PKCS#1 v1.5 signature over the SHA-256.
With -v, check such a .sig file instead.

  -i FILE      file to digest (an OS boot.img, an EEPROM image, boot.conf ...)
  -o SIGFILE   .sig file to write
  -c SOC       add a "target-soc:" line; SOC is 2711 or 2712
  -k KEY       RSA-2048 key file: private to sign, public (or private) for -v
  -H WRAPPER   sign through WRAPPER instead of a key file; it is run as
               'WRAPPER -a rsa2048-sha256 FILE' and must print the hex signature
  -v SIGFILE   check the signature in SIGFILE against FILE (needs -k)
  -h, --help   show this text

For example, a plain digest of an EEPROM image:
    rpi-eeprom-digest -o pieeprom.sig -i pieeprom.bin
signing an OS image for secure boot, then checking the result:
    rpi-eeprom-digest -k my-key.pem -i os/boot.img -o os/boot.sig
    rpi-eeprom-digest -k my-key.pub.pem -i os/boot.img -v os/boot.sig
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, add_help=False, usage=USAGE_LINE)
    parser.add_argument("-c", dest="target_soc", default="")
    parser.add_argument("-i", dest="image")
    parser.add_argument("-k", dest="key", default="")
    parser.add_argument("-H", dest="hsm_wrapper", default="")
    parser.add_argument("-o", dest="output", default="")
    parser.add_argument("-v", dest="signature")
    parser.add_argument("-h", "--help", dest="help", action="store_true")
    return parser


def write_sig(args: argparse.Namespace, data: bytes) -> None:
    rsa_hex = ""
    if args.hsm_wrapper:
        rsa_hex = run_hsm_wrapper(args.hsm_wrapper, args.image)
    elif args.key:
        rsa_hex = sign_pkcs1v15(load_private_key(args.key), data).hex()
    text = make_sig_file(data, sig_timestamp(), args.target_soc, rsa_hex)
    atomic_write(args.output, text.encode())


def verify_sig(args: argparse.Namespace, data: bytes) -> int:
    sig_text = read_file(args.signature, "signature file").decode("utf-8", "replace")
    signature = sig_file_signature(sig_text)
    if signature is None:
        raise ToolError(f"no RSA signature in {args.signature}")
    key = load_rsa_key(args.key)
    if verify_pkcs1v15(key, data, signature):
        print("Verified OK")
        return 0
    print("Verification failure")
    sys.stdout.flush()
    sys.stderr.write(f"{PROG}: error: the signature in {args.signature} does not match {args.image}\n")
    return 1


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.help:
        sys.stdout.write(USAGE)
        return 0
    if not args.image:
        raise ToolError("missing source image (-i)", 2)
    data = read_file(args.image, "source image")
    if args.signature is not None:
        if not args.key:
            raise ToolError("checking a signature (-v) needs the key to check it with (-k)", 2)
        return verify_sig(args, data)
    if not args.output:
        raise ToolError("missing output file (-o)", 2)
    if args.target_soc not in ("", "2711", "2712"):
        raise ToolError(f"-c takes 2711 or 2712, not {args.target_soc!r}", 2)
    write_sig(args, data)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
