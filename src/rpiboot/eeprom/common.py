"""Helpers shared by the EEPROM / secure-boot command-line tools.

Exit codes, the same in every EEPROM tool (rpi-eeprom-config,
rpi-eeprom-digest, rpi-sign-bootcode, rpi-bootloader-key-convert,
update-pieeprom, rpi-make-boot-image, make-pi4-rpiboot-gpio-sd,
make-eeprom-update-sd, rpi-secure-boot-check):
    0  success
    1  error: the inputs were read but are wrong (bad image, bad key, a
       signature that does not verify, a failed check, a failed write)
    2  command-line usage error
    3  an input is missing or cannot be read (a file or directory named on
       the command line or taken by default, a key file, an HSM wrapper)

rpi-make-boot-image adds 4 (contents do not fit), 5 (output cannot be
written) and 6 (the key file exists but is not a usable RSA-2048 private
key); see its module docstring.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_MISSING_INPUT = 3


class ToolError(Exception):
    """An error reported to the user as one line on stderr."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def read_file(path: str | os.PathLike[str], what: str = "file") -> bytes:
    """Read a whole file, turning OS errors into ToolError."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ToolError(f"{what} '{path}' not found", EXIT_MISSING_INPUT) from None
    except OSError as err:
        raise ToolError(f"cannot read {what} '{path}': {err.strerror or err}",
                        EXIT_MISSING_INPUT) from None


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write data to path via a temp file in the same directory + os.replace."""
    tmp_name = _stage(os.fspath(path), data)
    try:
        os.replace(tmp_name, path)
    except OSError as err:
        _remove_quietly(tmp_name)
        raise ToolError(f"cannot write '{path}': {err.strerror or err}") from None


def write_files_atomically(files: Sequence[tuple[str, bytes]]) -> None:
    """Replace several files so that either all of them change or none does.

    Every new content is first written to a temp file beside its target; only
    when all of them are complete are the targets replaced, in the given
    order.  Should a replacement fail half way, the targets already replaced
    are put back (or removed when they did not exist before).  Putting an
    old file back relies on a hard link to it; where the file system has no
    hard links, the half-updated target is removed instead.
    """
    staged: list[tuple[str, str]] = []
    try:
        for path, data in files:
            staged.append((path, _stage(path, data)))
        _swap_in(staged)
    finally:
        for _path, tmp in staged:
            _remove_quietly(tmp)


def _stage(path: str, data: bytes) -> str:
    import tempfile   # not needed by the tools that only read
    directory, name = os.path.split(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory or ".")
    except OSError as err:
        raise ToolError(f"cannot write '{path}': {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        # mkstemp creates 0600 files; give the output ordinary permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)
    except BaseException as err:
        _remove_quietly(tmp_name)
        if isinstance(err, OSError):
            raise ToolError(f"cannot write '{path}': {err.strerror or err}") from None
        raise
    return tmp_name


def _swap_in(staged: Sequence[tuple[str, str]]) -> None:
    done: list[tuple[str, str | None]] = []   # (target, backup of the old file or None)
    try:
        for path, tmp in staged:
            backup = _backup(path)
            try:
                os.replace(tmp, path)
            except OSError as err:
                if backup is not None:
                    _remove_quietly(backup)
                raise ToolError(f"cannot write '{path}': {err.strerror or err}") from None
            done.append((path, backup))
    except BaseException:
        for path, backup in reversed(done):
            if backup is None:
                _remove_quietly(path)
            else:
                try:
                    os.replace(backup, path)
                except OSError:
                    _remove_quietly(backup)
        raise
    for _path, backup in done:
        if backup is not None:
            _remove_quietly(backup)


def _backup(path: str) -> str | None:
    """Hard-link an existing regular file to a temp name so it can be restored."""
    if not os.path.isfile(path):
        return None
    directory, base = os.path.split(path)
    for attempt in range(100):
        name = os.path.join(directory, f".{base}.old{os.getpid()}.{attempt}")
        try:
            os.link(path, name)
            return name
        except FileExistsError:
            continue
        except OSError:
            return None
    return None


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_stdout(data: bytes) -> None:
    """Write raw bytes to stdout (text-mode stdout replacements supported)."""
    sys.stdout.flush()
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is not None:
        buffer.write(data)
        buffer.flush()
    else:
        sys.stdout.write(data.decode("utf-8", errors="surrogateescape"))


def run_tool(prog: str, body: Callable[[Sequence[str] | None], int],
             argv: Sequence[str] | None) -> int:
    """Run a tool body, mapping errors to `prog: error: msg` and an exit code."""
    try:
        return body(argv)
    except ToolError as err:
        sys.stderr.write(f"{prog}: error: {err}\n")
        return err.exit_code
    except SystemExit as exc:  # argparse --help / usage errors
        code = exc.code
        if code is None:
            return EXIT_OK
        return code if isinstance(code, int) else EXIT_ERROR
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: error: interrupted\n")
        return 130
    except BrokenPipeError:
        return EXIT_ERROR
    except OSError as err:
        name = f" '{err.filename}'" if err.filename else ""
        sys.stderr.write(f"{prog}: error:{name} {err.strerror or err}\n")
        return EXIT_ERROR
    except Exception as err:  # last resort: one line instead of a traceback
        sys.stderr.write(f"{prog}: error: unexpected {type(err).__name__}: {err}\n")
        return EXIT_ERROR
