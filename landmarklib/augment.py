"""Batched augmentation on the device: images and landmarks move together.

Images come in as the loader's uint8 (B, H, W, 3); targets are normalized (B, 971, 2) in
the grid_sample(align_corners=False) frame, so a mirror is x -> -x and an affine on the
points is the inverse of the sampling grid's affine. One call per batch, no per-image
Python, so Colab's 2 vCPUs never feed the GPU image by image.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .layout import FLIP_PERM

MODES = ("none", "flip", "full")
_FLIP_PERM = torch.from_numpy(FLIP_PERM.copy())
ROTATE_DEG, SCALE, SHIFT = 15.0, (0.9, 1.1), 0.06   # "full": rotation, zoom, shift (fraction of half-width)
COLOUR = 0.3                                        # "full": brightness/contrast/saturation in 1 +- 0.3


def to_nchw(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float [0, 1] (B, 3, H, W) in channels_last memory (a view, no copy of layout)."""
    return images.permute(0, 3, 1, 2).float().div_(255.0)


def flip_targets(targets: torch.Tensor) -> torch.Tensor:
    """Mirror normalized landmarks: x -> -x and the docs/FORMAT.md re-indexing."""
    out = targets[:, _FLIP_PERM.to(targets.device)].clone()
    out[..., 0] = -out[..., 0]
    return out


def augment(images: torch.Tensor, targets: torch.Tensor, mode: str,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return float images (B, 3, H, W) in [0, 1] and the matching targets."""
    if mode not in MODES:
        raise ValueError(f"unknown augment {mode!r}; choose one of {MODES}")
    x = to_nchw(images)
    if mode == "none":
        return x, targets
    b, dev = x.shape[0], x.device

    def rand(*shape):
        return torch.rand(*shape, device=dev, generator=generator)

    flip = rand(b) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    targets = torch.where(flip[:, None, None], flip_targets(targets), targets)
    if mode == "flip":
        return x, targets
    # Points move by p' = s R p + d; the sampling grid needs the inverse, p = R^T (p' - d) / s.
    angle = (rand(b) * 2 - 1) * math.radians(ROTATE_DEG)
    scale = SCALE[0] + rand(b) * (SCALE[1] - SCALE[0])
    shift = (rand(b, 2) * 2 - 1) * SHIFT
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)      # (B, 2, 2)
    inv = rot.transpose(1, 2) / scale[:, None, None]
    theta = torch.cat([inv, -(inv @ shift[:, :, None])], dim=2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    targets = scale[:, None, None] * (targets @ rot.transpose(1, 2)) + shift[:, None, :]
    # Colour: brightness, contrast about the image mean, saturation about the grey image.
    grey = (x * torch.tensor([0.299, 0.587, 0.114], device=dev).view(1, 3, 1, 1)).sum(1, keepdim=True)
    sat = 1 + (rand(b, 1, 1, 1) * 2 - 1) * COLOUR
    x = grey + (x - grey) * sat
    con = 1 + (rand(b, 1, 1, 1) * 2 - 1) * COLOUR
    x = grey.mean((2, 3), keepdim=True) + (x - grey.mean((2, 3), keepdim=True)) * con
    x = x * (1 + (rand(b, 1, 1, 1) * 2 - 1) * COLOUR)
    return x.clamp_(0, 1).contiguous(memory_format=torch.channels_last), targets
