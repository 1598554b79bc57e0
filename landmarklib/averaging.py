"""The weights a run validates and saves: an exponential moving average (EMA) of the training
weights, and BatchNorm statistics recomputed for the weights at hand ("precise BN").

BatchNorm's running statistics are an average over the last ~10 steps of batch statistics taken
under older weights. When the weights move fast (the peak LR) or have had few steps (batch 256 on
800 images: 15 updates), those statistics do not match the weights, and validation is measured on a
network that never existed. Recomputing them from a few hundred training images, with the weights
fixed, costs a forward pass over those images and removes the mismatch. The EMA's averaged weights
need it all the more: no batch was ever run through them.

The EMA is torch.optim.swa_utils.AveragedModel (use_buffers: the BatchNorm buffers are averaged
too, so the averaged model is usable even without precise BN); torch's own, so it needs nothing
beyond torch and its state dict is the model's under `module.`.
"""
from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

from .augment import to_nchw


def ema_decay(fraction: float, total_steps: int) -> float:
    """The per-step decay of an EMA whose time constant is `fraction` of a run of `total_steps`
    optimizer steps (0.05 of the demo set's 125 steps: 6 steps; of the contest's 118,000: 5,900),
    so one setting means the same thing at any run length."""
    return 1.0 - 1.0 / max(1.0, fraction * total_steps)


def make_ema(model: torch.nn.Module, fraction: float, total_steps: int) -> AveragedModel:
    """An EMA of `model`'s weights and BatchNorm buffers; `update_parameters(model)` after every step.
    The first update copies the weights, so nothing is averaged from before training."""
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay(fraction, total_steps)),
                        use_buffers=True)
    ema.module.requires_grad_(False)
    return ema


@torch.no_grad()
def recompute_bn(model: torch.nn.Module, loader) -> None:
    """Precise BN: reset every BatchNorm's running mean and variance and set them to the plain average
    over `loader`'s batches (training images, unaugmented, as validation sees them), with the weights
    fixed. Leaves the model in the mode it was in. Under forked RNG state, so a model with dropout
    (some timm backbones) trains on exactly as it would have without this pass."""
    devices = [loader.device] if loader.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        update_bn((to_nchw(images) for images, _, _ in loader), model)
