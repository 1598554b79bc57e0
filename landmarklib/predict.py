"""Predict the test set from one or several runs and write the submission.

    python -m landmarklib.predict --data-dir D --checkpoint RUN/best.pt [RUN2/best.pt ...] \
        --out submission.csv [--tta flip]

Several checkpoints average their predictions in original pixels (an ensemble; each run
may use its own crop size and resize mode). --tta flip averages each image with its mirror.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from . import checkpoint
from .augment import flip_targets, to_nchw
from .cache import build_cache, cache_root
from .config import SETTINGS
from .data import load_split
from .errors import DataError, check_output, cli
from .geometry import decode
from .layout import N_POINTS
from .loader import BatchLoader
from .models import create_model
from .progress import bar
from .runtime import autocast_dtype, prepare_model, resolve_device
from .submission import write_submission

TTA = ("none", "flip")   # test-time augmentation: none, or each image averaged with its mirror
PREDICT_CHUNK = 4_096   # images predicted and decoded per pass (~0.4 GB of float64 work): flat at any split size


@torch.no_grad()
def predict_batches(model, loader: BatchLoader, amp_dtype=None, flip_tta: bool = False):
    """Yield (normalized predictions (B, 971, 2) on the loader's device, their rows), batch by batch.
    flip_tta averages each image with its mirror (predictions re-indexed and mirrored back)."""
    model.eval()
    for images, _, r in loader:
        x = to_nchw(images)
        with torch.autocast(loader.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            p = model(x).float()
            if flip_tta:
                p = (p + flip_targets(model(x.flip(3)).float())) / 2
        yield p, r


def predict_normalized(model, loader: BatchLoader, amp_dtype=None, flip_tta: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized predictions (N, 971, 2) in loader order, on the loader's device, with their rows."""
    preds, rows = zip(*predict_batches(model, loader, amp_dtype, flip_tta))
    return torch.cat(preds), torch.cat(rows)


def load_checkpoint(path: str | Path, device: torch.device):
    """The model and config from a run's checkpoint (weights_only: no code runs on load)."""
    ckpt = checkpoint.read(path)
    cfg = ckpt["config"]
    try:
        model = create_model(cfg["arch"])
        model.load_state_dict(ckpt["model"])
    except (KeyError, ValueError, RuntimeError) as e:
        raise DataError(f"{path}: its weights do not fit its config's arch {cfg.get('arch')!r} "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    return prepare_model(model, device).eval(), cfg


def predict_split(checkpoints: list[str | Path], data_dir: str | Path, split: str = "test", tta: str = "none",
                  device: str = "auto", cache_dir: str | Path | None = None, batch_size: int = 128,
                  rows: np.ndarray | None = None, progress: bool = True) -> np.ndarray:
    """(N, 971, 2) predictions in original pixels for `split` (or its `rows`), averaged over checkpoints."""
    if tta not in TTA:
        raise ValueError(f"tta: unknown tta {tta!r}; choose one of {', '.join(TTA)}")
    dev = resolve_device(device)
    root = cache_root(data_dir, cache_dir)
    total = None
    for path in bar(checkpoints, desc="checkpoints", disable=not progress or len(checkpoints) < 2):
        model, cfg = load_checkpoint(path, dev)
        cache = build_cache(data_dir, split, root, cfg["crop_size"], cfg["resize_mode"], progress=progress)
        idx = np.arange(len(cache)) if rows is None else np.asarray(rows)
        if total is None:   # float32 and filled batch by batch: 0.78 GB for the 99,819 test images
            total = np.zeros((len(idx), N_POINTS, 2), np.float32)
        pos = np.empty(len(cache), np.int64)
        pos[idx] = np.arange(len(idx))
        amp_dtype = autocast_dtype(dev, SETTINGS["amp"].check(cfg.get("amp", "auto")))   # as the run read it
        for start in range(0, len(idx), PREDICT_CHUNK):
            loader = BatchLoader(cache.images, None, idx[start:start + PREDICT_CHUNK], batch_size, shuffle=False,
                                 device=dev)
            pred, r = predict_normalized(model, loader, amp_dtype, tta == "flip")
            orig = decode(pred, torch.from_numpy(cache.affine[r.numpy()]).to(dev), cache.crop_size)
            total[pos[r.numpy()]] += orig.cpu().numpy().astype(np.float32)
    return total / np.float32(len(checkpoints))


@cli
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m landmarklib.predict", description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, type=Path)
    p.add_argument("--checkpoint", required=True, nargs="+")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--tta", default="none", choices=TTA)
    p.add_argument("--device", default="auto")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--batch-size", type=int, default=128)
    a = p.parse_args(argv)
    check_output(a.out)
    test = load_split(a.data_dir, "test")
    pred = predict_split(a.checkpoint, a.data_dir, "test", a.tta, a.device, a.cache_dir, a.batch_size)
    write_submission(a.out, test.names, pred, test.indices, source=", ".join(map(str, a.checkpoint)))
    print(f"wrote {a.out}: {len(test.names)} rows from {len(a.checkpoint)} checkpoint(s), tta {a.tta}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
