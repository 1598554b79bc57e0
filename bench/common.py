"""Shared pieces of the benchmarks: the organizers'-baseline-style per-image pipeline, and dropping
files from the page cache."""
from __future__ import annotations

import os
from typing import Iterable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import functional as TF

from landmarklib.geometry import fit_affine, to_input
from landmarklib.models import IMAGENET_MEAN, IMAGENET_STD


class PerImageDataset(Dataset):
    """Like the organizers' hack_train.py: decode the full JPEG every time, scale the short
    side to the crop, centre crop, ToTensor, Normalize; targets in raw crop pixels."""

    def __init__(self, split, rows, crop_size: int):
        self.split, self.rows, self.crop_size = split, np.asarray(rows), crop_size

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        r = self.rows[i]
        img = Image.open(self.split.image_path(r)).convert("RGB")
        w, h = img.size
        img = TF.center_crop(TF.resize(img, self.crop_size, antialias=True), [self.crop_size, self.crop_size])
        x = TF.normalize(TF.to_tensor(img), IMAGENET_MEAN, IMAGENET_STD)
        if self.split.landmarks is None:
            return x, torch.zeros(971, 2), r
        t = to_input(self.split.landmarks[r], fit_affine(w, h, self.crop_size, "crop"))
        return x, torch.from_numpy(t.astype(np.float32)), r


def baseline_model(arch: str, device) -> torch.nn.Module:
    """A torchvision backbone with a plain Linear(., 1942) head, default init (as hack_train.py)."""
    import torchvision
    from landmarklib.models import ARCHS
    m = getattr(torchvision.models, ARCHS[arch])(weights=None)
    m.fc = torch.nn.Linear(m.fc.in_features, 2 * 971)
    return m.to(device)


def baseline_train_steps(model, loader, optimizer, device, max_steps: int | None = None) -> int:
    """hack_train.py's loop: fp32, predictions moved to the CPU for an MSE on raw crop-pixel targets."""
    model.train()
    seen = 0
    for step, (x, t, _) in enumerate(loader):
        if max_steps is not None and step >= max_steps:
            break
        pred = model(x.to(device)).cpu()
        loss = torch.nn.functional.mse_loss(pred, t.reshape(len(t), -1), reduction="mean")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += len(x)
    return seen


@torch.no_grad()
def baseline_predict(model, loader, device) -> tuple[np.ndarray, np.ndarray]:
    """Crop-pixel predictions (N, 971, 2) and their rows."""
    model.eval()
    preds, rows = [], []
    for x, _, r in loader:
        preds.append(model(x.to(device)).float().cpu().reshape(len(x), 971, 2).numpy())
        rows.append(np.asarray(r))
    return np.concatenate(preds), np.concatenate(rows)


def drop_pages(paths: Iterable[str | os.PathLike]) -> None:
    """Drop the files' pages from the page cache (posix_fadvise DONTNEED): the next read is from disk."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
