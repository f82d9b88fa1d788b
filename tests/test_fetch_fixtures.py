"""scripts/fetch_fixtures.py: the upstream fixtures fetched from a local HTTP server on 127.0.0.1
(as from GitHub), checked against their pinned sha256, and found by the tests through
RPIBOOT_FIXTURES."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine_support import FIXTURES, REPO_ROOT, content

SCRIPT = REPO_ROOT / "scripts" / "fetch_fixtures.py"
MANIFEST = REPO_ROOT / "tests" / "fixtures" / "upstream-manifest.tsv"
COMMIT = "87d6e03272b0ae155d85a125bfdec03e3d4a1095"


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "RPIBOOT_DOWNLOAD_URL"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=60, env=env)


def small_manifest(tmp_path: Path, root: Path, files: dict[str, bytes],
                   digests: dict[str, str] | None = None) -> Path:
    lines = ["file\tsource_repository\tcommit\tpath\tsha256"]
    for name, data in files.items():
        served = root / "raspberrypi" / "usbboot" / COMMIT / name
        served.parent.mkdir(parents=True, exist_ok=True)
        served.write_bytes(data)
        digest = (digests or {}).get(name) or hashlib.sha256(data).hexdigest()
        lines.append(f"usbboot/{name}\traspberrypi/usbboot\t{COMMIT}\t{name}\t{digest}")
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def test_fetches_into_the_fixtures_layout(http_files, tmp_path: Path) -> None:
    base, state = http_files
    files = {"msd/bootcode.bin": content("bootcode", 5000), "recovery/boot.conf": b"[all]\n"}
    manifest = small_manifest(tmp_path, state.root, files)
    target = tmp_path / "fixtures"
    done = run_script(str(target), "--base-url", base, "--manifest", str(manifest))
    assert done.returncode == 0, done.stderr
    assert "2 downloaded" in done.stdout
    for name, data in files.items():
        assert (target / "upstream" / "usbboot" / name).read_bytes() == data
    assert (target / "upstream" / "MANIFEST.tsv").read_text() == manifest.read_text()
    again = run_script(str(target), "--base-url", base, "--manifest", str(manifest))
    assert again.returncode == 0 and "0 downloaded, 2 already there" in again.stdout
    assert len(state.requests) == 2


def test_a_wrong_file_is_refused_in_one_line(http_files, tmp_path: Path) -> None:
    base, state = http_files
    manifest = small_manifest(tmp_path, state.root, {"msd/start.elf": b"tampered"},
                              {"msd/start.elf": "0" * 64})
    target = tmp_path / "fixtures"
    done = run_script(str(target), "--base-url", base, "--manifest", str(manifest))
    assert done.returncode == 3
    assert done.stderr.count("\n") == 1 and "checksum mismatch" in done.stderr
    assert not (target / "upstream" / "usbboot" / "msd" / "start.elf").exists()


def test_repository_manifest_is_the_shared_one() -> None:
    shared = FIXTURES / "upstream" / "MANIFEST.tsv"
    if not shared.is_file():
        pytest.skip(f"no upstream fixtures at {FIXTURES}")
    assert MANIFEST.read_text() == shared.read_text()


def test_fixture_files_match_the_manifest() -> None:
    """What the tests read is what the manifest pins (the same check the script makes)."""
    sys.path.insert(0, str(REPO_ROOT / "src"))
    from rpiboot.download import read_manifest, verify_all
    upstream = FIXTURES / "upstream"
    if not upstream.is_dir():
        pytest.skip(f"no upstream fixtures at {FIXTURES}")
    assert verify_all(read_manifest(MANIFEST), upstream) == []


def test_engine_support_honours_rpiboot_fixtures(tmp_path: Path) -> None:
    probe = ("import engine_support, sys; print(engine_support.FIXTURES); "
             "print(engine_support.UPSTREAM_USBBOOT)")
    env = {**os.environ, "RPIBOOT_FIXTURES": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=REPO_ROOT / "tests", env=env, timeout=60)
    assert done.stdout.split() == [str(tmp_path), str(tmp_path / "upstream" / "usbboot")]
