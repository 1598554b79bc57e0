"""Atomic file writes: write a temp file beside the target, then rename it over the target.

A run killed mid-write (a Colab disconnect) leaves the previous file intact, never half of one.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temp path to write; on success it replaces `path` (os.replace is atomic on POSIX)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: Path | str, obj) -> Path:
    """JSON, indented, written atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1) + "\n")
    return path
