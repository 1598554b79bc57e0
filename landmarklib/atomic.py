"""Atomic file writes: write a temp file beside the target, then rename it over the target.

A run killed mid-write (a Colab disconnect) leaves the previous file intact, never half of one.
"""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .errors import DataError, os_error


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temp path to write; on success it replaces `path` (os.replace is atomic on POSIX).
    A failed write (a full disk, a read-only folder) is a DataError naming `path`; `path` is untouched."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise os_error(e, path) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: Path | str, obj) -> Path:
    """JSON, indented, written atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1) + "\n")
    return path


@contextmanager
def file_lock(path: Path | str, busy: Callable[[str], None]) -> Iterator[None]:
    """Hold an flock on `path` for the duration; it dies with its process (a killed holder leaves nothing
    to clean up). When another process holds it, busy(owner) is called first: raise to refuse, return
    to wait for the lock."""
    try:
        import fcntl
    except ImportError:      # not POSIX: no lock
        yield
        return
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            busy(f.read().strip() or "another process")
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_lock(run_dir: Path | str):
    """Own `run_dir` for the duration: a second process is refused, naming the owner (a file_lock on
    run_dir/.lock)."""
    def refuse(owner: str) -> None:
        raise DataError(f"{run_dir}: in use by {owner}; wait for it to finish, or use another run dir")
    return file_lock(Path(run_dir) / ".lock", refuse)


def check_free_space(folder: Path, need: int, what: str, instead: str = "choose another folder") -> None:
    """Stop before a step that would fill the disk half-way: needed, free and where, in one line."""
    free = shutil.disk_usage(folder).free
    if need > free:
        raise DataError(f"{folder}: {what} needs {need / 2**30:.2f} GiB, {free / 2**30:.2f} GiB free there; "
                        f"free some space or {instead}")
