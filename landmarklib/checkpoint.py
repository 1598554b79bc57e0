"""Checkpoints: written atomically, read with weights_only=True and checked before use, so a
truncated, foreign or corrupt file is one clear error naming it, never a traceback mid-run."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from .atomic import atomic_path
from .errors import DataError


def save(obj: dict, path: Path) -> None:
    """torch.save through a temp file: a kill or a full disk leaves the previous checkpoint intact."""
    try:
        with atomic_path(path) as tmp:   # an OSError becomes a DataError naming `path` there
            torch.save(obj, tmp)
    except RuntimeError as e:    # torch's writer reports a full disk as a RuntimeError
        raise DataError(f"{path}: could not be written ({str(e).splitlines()[0]}); the previous one is intact") from None


def read(path: Path | str, keys: tuple[str, ...] = ("model", "config")) -> dict:
    """A landmarklib checkpoint: a dict with `keys`, a state dict of finite tensors and a config dict."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise DataError(f"{path}: not a readable checkpoint, truncated or corrupt "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})") from None
    if not isinstance(ckpt, dict) or not all(k in ckpt for k in keys):
        if isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            raise DataError(f"{path}: a bare state dict, not a landmarklib checkpoint (no config); "
                            f"to start from these weights use --weights-path")
        raise DataError(f"{path}: not a landmarklib checkpoint (expected a dict with {', '.join(keys)})")
    state, cfg = ckpt["model"], ckpt.get("config", {})
    if not isinstance(cfg, dict) or not isinstance(state, dict) \
            or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{path}: malformed checkpoint (model must be a state dict of tensors, config a dict)")
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise DataError(f"{path}: weights hold NaN or inf (first in {bad!r}); the run diverged: use an earlier "
                        f"checkpoint or train again with a lower lr")
    return ckpt
