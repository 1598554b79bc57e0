"""Regression losses on normalized coordinates (1 unit = half the input side).

Parameters are in normalized units too, so they mean the same at any crop size:
at 128 px, 0.02 is 1.28 input pixels.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

LOSSES = ("mse", "smoothl1", "l1", "wing")


def wing_loss(pred: torch.Tensor, target: torch.Tensor, w: float, eps: float) -> torch.Tensor:
    """Feng et al. 2018: w*ln(1 + |x|/eps) for |x| < w, |x| - C beyond, C making it continuous."""
    x = (pred - target).abs()
    c = w - w * math.log(1 + w / eps)
    return torch.where(x < w, w * torch.log1p(x / eps), x - c).mean()


def make_loss(cfg: dict) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss cfg['loss'] names, with its parameters from the same config (config.DEFAULTS)."""
    name = cfg["loss"]
    if name == "mse":
        return F.mse_loss
    if name == "l1":
        return F.l1_loss
    if name == "smoothl1":
        return lambda p, t: F.smooth_l1_loss(p, t, beta=cfg["smoothl1_beta"])
    if name == "wing":
        return lambda p, t: wing_loss(p, t, cfg["wing_w"], cfg["wing_eps"])
    raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")
