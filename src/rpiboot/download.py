"""Pinned downloads: files named by repository, commit and path, each checked against a digest
before it is put in place. Used by ``rpiboot --fetch-boot-files`` and by
``scripts/fetch_fixtures.py`` (standard library only, so the script runs before anything else is
installed).

A file is downloaded to ``.NAME.part`` beside its destination; an interrupted download resumes
from there with an HTTP ``Range`` request (a server that ignores it sends the whole file again).
Only a file whose digest matches is renamed into place; a mismatch deletes the partial file.
The base URL defaults to GitHub's raw file host; ``RPIBOOT_DOWNLOAD_URL`` (or ``base_url``) points
at a mirror laid out the same way: ``BASE/OWNER/REPO/COMMIT/PATH``.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .errors import DownloadError

DEFAULT_BASE_URL = "https://raw.githubusercontent.com"
BASE_URL_VARIABLE = "RPIBOOT_DOWNLOAD_URL"
CHUNK = 64 * 1024

Progress = Callable[["PinnedFile", int, "int | None"], None]
"""Called with the file, the bytes it has so far and its size (None when unknown)."""


@dataclass(frozen=True)
class PinnedFile:
    file: str
    """Where it goes, relative to the destination directory (``/``-separated)."""
    repository: str
    commit: str
    path: str
    size: int | None
    sha256: str | None
    git_blob_sha1: str | None = None
    """Used only where no sha256 is known: git's object id of the file's contents."""

    def url(self, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/{self.repository}/{self.commit}/{self.path}"

    def matches(self, path: Path) -> bool:
        """Whether the file at ``path`` has this file's contents."""
        try:
            return digest_of(path, self) == self.expected_digest
        except OSError:
            return False

    @property
    def expected_digest(self) -> str:
        return self.sha256 or f"git-blob-sha1:{self.git_blob_sha1}"


def read_manifest(path: Path) -> list[PinnedFile]:
    """A tab-separated list with the columns file, source_repository, commit, path, sha256 and
    optionally size and git_blob_sha1 ('-' for unknown)."""
    with open(path, encoding="utf-8", newline="") as stream:
        rows = list(csv.DictReader(stream, delimiter="\t"))
    return [_pinned(row) for row in rows]


def _pinned(row: dict[str, str]) -> PinnedFile:
    def value(name: str) -> str | None:
        text = (row.get(name) or "").strip()
        return None if text in ("", "-") else text

    size = value("size")
    pinned = PinnedFile(file=value("file") or "", repository=value("source_repository") or "",
                        commit=value("commit") or "", path=value("path") or "",
                        size=int(size) if size else None, sha256=value("sha256"),
                        git_blob_sha1=value("git_blob_sha1"))
    if not pinned.file or not (pinned.sha256 or pinned.git_blob_sha1):
        raise ValueError(f"manifest row without a file or digest: {row}")
    if pinned.file.startswith("/") or ".." in pinned.file.split("/"):
        raise ValueError(f"manifest row leaves its directory: {pinned.file}")
    return pinned


def base_url(override: str | None = None) -> str:
    return override or os.environ.get(BASE_URL_VARIABLE) or DEFAULT_BASE_URL


def digest_of(path: Path, pinned: PinnedFile) -> str:
    """The digest of the file at path, in the form ``pinned`` is checked with."""
    if pinned.sha256:
        hasher = hashlib.sha256()
    else:
        hasher = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            hasher.update(chunk)
    return hasher.hexdigest() if pinned.sha256 else f"git-blob-sha1:{hasher.hexdigest()}"


def fetch(pinned: PinnedFile, destination: Path, *, base: str | None = None,
          progress: Progress | None = None, timeout: float = 30.0) -> bool:
    """Put ``pinned`` at ``destination`` (a file path). Returns False when a matching file was
    already there, True when it was downloaded. Raises :class:`DownloadError`."""
    if destination.is_file() and pinned.matches(destination):
        return False
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(f".{destination.name}.part")
    url = pinned.url(base_url(base))
    _download(url, part, pinned, progress, timeout)
    actual = digest_of(part, pinned)
    if actual != pinned.expected_digest:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{pinned.file}: checksum mismatch (expected {pinned.expected_digest}, "
                            f"got {actual}) from {url}; nothing was installed")
    os.replace(part, destination)
    return True


def fetch_all(files: Iterable[PinnedFile], directory: Path, *, base: str | None = None,
              progress: Progress | None = None) -> list[PinnedFile]:
    """Fetch every file below ``directory``; returns those that were downloaded."""
    return [pinned for pinned in files
            if fetch(pinned, directory.joinpath(*pinned.file.split("/")), base=base,
                     progress=progress)]


def _download(url: str, part: Path, pinned: PinnedFile, progress: Progress | None,
              timeout: float) -> None:
    have = part.stat().st_size if part.is_file() else 0
    if pinned.size is not None and have >= pinned.size:
        if have == pinned.size:
            return  # complete from an earlier run; the digest decides
        part.unlink()
        have = 0
    headers = {"User-Agent": "rpiboot-fetch"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=timeout) as response:
            resumed = have > 0 and response.status == 206
            have = have if resumed else 0
            length = response.headers.get("Content-Length")
            total = pinned.size or (have + int(length) if length and length.isdigit() else None)
            with open(part, "ab" if resumed else "wb") as stream:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    stream.write(chunk)
                    have += len(chunk)
                    if progress is not None:
                        progress(pinned, have, total)
                stream.flush()
                os.fsync(stream.fileno())
            if total is not None and have < total:
                raise http.client.IncompleteRead(b"", total - have)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:
            return  # nothing left to send: the partial file is whole, the digest decides
        raise DownloadError(f"cannot download {pinned.file}: HTTP {error.code} {error.reason} "
                            f"from {url}") from None
    except http.client.IncompleteRead:
        raise DownloadError(f"cannot download {pinned.file} from {url}: the connection ended "
                            f"after {have} bytes (run it again to resume)") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise DownloadError(f"cannot download {pinned.file} from {url}: {reason} (run it again "
                            f"to resume)") from None


def verify_all(files: Sequence[PinnedFile], directory: Path) -> list[str]:
    """The files below ``directory`` that are missing or do not match (empty when all do)."""
    return [pinned.file for pinned in files
            if not pinned.matches(directory.joinpath(*pinned.file.split("/")))]
