"""Errors a user can act on, and the one way every CLI reports them: `error: <file>[:<line>]: <what>`
on stderr and exit status 2, never a traceback."""
from __future__ import annotations

import errno
import functools
import os
import sys
from pathlib import Path
from typing import Callable


class DataError(Exception):
    """Bad input or an unusable place to write, with a message that names the file (and the line)."""


def os_error(err: OSError, path: Path | str | None = None) -> DataError:
    """An OSError as a DataError naming the file: full disk, read-only folder, a file where a folder goes."""
    where = path or err.filename or "?"
    if err.errno == errno.ENOSPC:
        return DataError(f"{where}: no space left on the device; free some space and run again "
                         f"(what was written before is intact)")
    return DataError(f"{where}: {err.strerror or err}")


TRACEBACK = "LANDMARKLIB_TRACEBACK"   # =1: a CLI's errors end in their traceback, not one line


def cli(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap a CLI's main: DataError, ValueError (a bad setting) and OSError become one line and exit 2.
    A ValueError may also be a bug's: its line says how to see the traceback (LANDMARKLIB_TRACEBACK=1)."""
    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> int:
        if os.environ.get(TRACEBACK, "") not in ("", "0"):
            return main(argv)
        try:
            return main(argv)
        except DataError as e:
            message = str(e)
        except ValueError as e:
            message = f"{e} ({TRACEBACK}=1 shows where it came from)"
        except OSError as e:
            message = str(os_error(e))
        print(f"error: {message}", file=sys.stderr)
        return 2
    return run


def check_output(path: Path | str, kind: str = "file") -> Path:
    """Before the long work: the place `path` (a file, or a folder with kind='folder') will be written
    must be writable. Missing parent folders are made; a file where a folder goes, a folder where a
    file goes, or a read-only folder are DataErrors."""
    path = Path(path)
    folder = path if kind == "folder" else path.parent
    if kind == "file" and path.is_dir():
        raise DataError(f"{path}: is a folder; give a file name to write")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [folder, *folder.parents] if p.is_file()), folder)
        raise DataError(f"{blocker}: is a file, not a folder (to write {path})") from None
    except OSError as e:
        raise os_error(e, folder) from None
    probe = folder / f".write-test-{id(path)}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise DataError(f"{folder}: cannot write here ({e.strerror})") from None
    return path
