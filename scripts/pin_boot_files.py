#!/usr/bin/env python3
"""Regenerate src/rpiboot/boot_files.tsv, the pinned list `rpiboot --fetch-boot-files` downloads.

    python3 scripts/pin_boot_files.py USBBOOT_GIT EEPROM_GIT [COMMIT] > src/rpiboot/boot_files.tsv

Reads the two repositories with git (no work tree needed): the usbboot tree at COMMIT (default
HEAD), following its symbolic links (also into the rpi-eeprom submodule, at the commit usbboot pins
it to), so every line names the real file to download. A blob the git directory lacks (a shallow
or size-limited copy) is pinned by its git blob id instead of its sha256; the script says so on
stderr.
"""

from __future__ import annotations

import hashlib
import posixpath
import subprocess
import sys

DIRECTORIES = {
    "mass-storage-gadget64": ["bootfiles.bin", "boot.img", "config.txt"],
    "msd": ["bootcode.bin", "bootcode4.bin", "start.elf"],
    "recovery": ["bootcode4.bin", "boot.conf", "config.txt", "pieeprom.original.bin"],
    "recovery5": ["bootcode5.bin", "boot.conf", "config.txt", "pieeprom.original.bin"],
}
SUBMODULE = "rpi-eeprom"


def git(directory: str, *args: str) -> bytes:
    return subprocess.run(["git", "-C", directory, *args], check=True,
                          capture_output=True).stdout


def entry(directory: str, commit: str, path: str) -> tuple[str, str, str]:
    """(mode, type, object id) of path in the tree of commit."""
    line = git(directory, "ls-tree", commit, "--", path).decode().strip()
    if not line:
        raise SystemExit(f"{path} is not in {commit}")
    meta, _name = line.split("\t", 1)
    mode, kind, oid = meta.split()
    return mode, kind, oid


def resolve(usbboot: str, eeprom: str, commit: str, path: str) -> tuple[str, str, str, str]:
    """(repository, git dir, commit, path) of the regular file path leads to."""
    for _ in range(10):
        mode, _kind, oid = entry(usbboot, commit, path)
        if mode != "120000":
            return "raspberrypi/usbboot", usbboot, commit, path
        path = posixpath.normpath(posixpath.join(posixpath.dirname(path),
                                                 git(usbboot, "cat-file", "blob", oid).decode()))
        if path.startswith(SUBMODULE + "/"):
            _mode, _kind, pinned = entry(usbboot, commit, SUBMODULE)
            return "raspberrypi/rpi-eeprom", eeprom, pinned, path[len(SUBMODULE) + 1:]
    raise SystemExit(f"symbolic link loop at {path}")


def main(argv: list[str]) -> int:
    usbboot, eeprom = argv[0], argv[1]
    commit = git(usbboot, "rev-parse", argv[2] if len(argv) > 2 else "HEAD").decode().strip()
    print("file\tsource_repository\tcommit\tpath\tsize\tsha256\tgit_blob_sha1")
    for directory, names in DIRECTORIES.items():
        for name in names:
            repository, git_dir, pinned, path = resolve(usbboot, eeprom, commit,
                                                        f"{directory}/{name}")
            _mode, _kind, oid = entry(git_dir, pinned, path)
            try:
                data = git(git_dir, "cat-file", "blob", oid)
            except subprocess.CalledProcessError:
                print(f"{directory}/{name}: blob {oid} not in {git_dir}; pinned by its git blob "
                      f"id", file=sys.stderr)
                print(f"{directory}/{name}\t{repository}\t{pinned}\t{path}\t-\t-\t{oid}")
                continue
            sha256 = hashlib.sha256(data).hexdigest()
            print(f"{directory}/{name}\t{repository}\t{pinned}\t{path}\t{len(data)}\t{sha256}\t"
                  f"{oid}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
