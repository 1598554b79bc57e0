"""Regression losses on normalized coordinates (1 unit = half the input side).

Parameters are in normalized units too, so they mean the same at any crop size:
at 128 px, 0.02 is 1.28 input pixels.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

def wing_loss(pred: torch.Tensor, target: torch.Tensor, w: float, eps: float) -> torch.Tensor:
    """Feng et al. 2018: w*ln(1 + |x|/eps) for |x| < w, |x| - C beyond, C making it continuous."""
    x = (pred - target).abs()
    c = w - w * math.log(1 + w / eps)
    return torch.where(x < w, w * torch.log1p(x / eps), x - c).mean()


# name -> the loss, built from the run config (its parameters are run settings, config.RUN).
# Adding a loss is one entry here and its parameters' entries in config.RUN.
LOSSES: dict[str, Callable[[dict], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]] = {
    "mse": lambda cfg: F.mse_loss,
    "smoothl1": lambda cfg: lambda p, t: F.smooth_l1_loss(p, t, beta=cfg["smoothl1_beta"]),
    "l1": lambda cfg: F.l1_loss,
    "wing": lambda cfg: lambda p, t: wing_loss(p, t, cfg["wing_w"], cfg["wing_eps"]),
}


def make_loss(cfg: dict) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss cfg['loss'] names, with its parameters from the same config."""
    if cfg["loss"] not in LOSSES:
        raise ValueError(f"loss: unknown loss {cfg['loss']!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[cfg["loss"]](cfg)
