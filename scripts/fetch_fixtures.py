#!/usr/bin/env python3
"""Fetch the upstream files some tests compare against (real Raspberry Pi firmware, EEPROM images,
usbboot configuration), each checked against the sha256 pinned in
tests/fixtures/upstream-manifest.tsv.

    python3 scripts/fetch_fixtures.py [DIR] [--base-url URL] [--manifest FILE]

DIR is the fixtures directory the tests read (default: $RPIBOOT_FIXTURES, else shared/fixtures
beside the checkout); files go to DIR/upstream/ under the names in the manifest's first column,
downloaded from raw.githubusercontent.com/OWNER/REPO/COMMIT/PATH (--base-url or
RPIBOOT_DOWNLOAD_URL for a mirror laid out the same way). Interrupted downloads resume; a file is
put in place only once its sha256 matches. Needs only the standard library. Then run the tests with
RPIBOOT_FIXTURES=DIR (not needed for the default DIR).

The golden outputs of upstream's tools (fixtures/golden) cannot be fetched: they were made by
running those tools (see their PROVENANCE.md); tests that need them skip without them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from rpiboot.download import DownloadError, fetch_all, read_manifest  # noqa: E402
from rpiboot.errors import ExitCode  # noqa: E402

MANIFEST = REPO / "tests" / "fixtures" / "upstream-manifest.tsv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fetch_fixtures.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", nargs="?", type=Path,
                        default=Path(os.environ.get("RPIBOOT_FIXTURES")
                                     or REPO.parent / "shared" / "fixtures"))
    parser.add_argument("--base-url", help="mirror laid out as OWNER/REPO/COMMIT/PATH")
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    args = parser.parse_args(argv)
    upstream = args.directory / "upstream"
    try:
        files = read_manifest(args.manifest)
        fetched = fetch_all(files, upstream, base=args.base_url,
                            progress=lambda pinned, have, total: None)
        shutil.copyfile(args.manifest, upstream / "MANIFEST.tsv")
    except (DownloadError, OSError, ValueError) as error:
        print(f"fetch_fixtures.py: error: {error}", file=sys.stderr)
        return int(ExitCode.BOOT_DIRECTORY)
    print(f"{upstream}: {len(fetched)} downloaded, {len(files) - len(fetched)} already there "
          f"(all {len(files)} match their sha256)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
