"""Learning-rate schedules as plain functions of the (fractional) epoch, nanoGPT style.

The training loop sets every param group's lr to peak_lr(cfg) * lr_factor(cfg, t) * plateau.scale
before each step, with t = epoch + step / steps_per_epoch. Warmup and the default drop are
fractions of the run, so one recipe holds from the demo set's few hundred steps to the contest's
tens of thousands. Only reduce-on-plateau keeps state (Plateau, saved in the checkpoint).
"""
from __future__ import annotations

import math

SCHEDULES = ("constant", "drop", "plateau", "cosine", "warm_restarts", "onecycle")
LR_SCALINGS = ("sqrt", "linear", "none")
LR_BATCH = 32   # the batch size cfg['lr'] is quoted for (the default); other batches scale it by cfg['lr_scaling']


def peak_lr(cfg: dict) -> float:
    """cfg['lr'] scaled from a batch of LR_BATCH to cfg['batch_size']: by the square root of the ratio
    (what keeps Adam's update noise level; the default), linearly (SGD's rule), or not at all."""
    ratio = cfg["batch_size"] / LR_BATCH
    return cfg["lr"] * {"sqrt": ratio ** 0.5, "linear": ratio, "none": 1.0}[cfg["lr_scaling"]]


def default_drop_at(epochs: int) -> list[int]:
    """Where the LR drops when drop_at is not given: at 2/3 of the run (8 of 12, the seed recipe)."""
    return [max(1, round(epochs * 2 / 3))]


def lr_factor(cfg: dict, t: float) -> float:
    """Multiplier of the peak LR at fractional epoch t (0 <= t <= cfg['epochs']).

    warmup > 0 ramps any schedule but onecycle (which has its own) linearly up from ~0 over that
    fraction of the run."""
    name, epochs = cfg["schedule"], cfg["epochs"]
    warm = cfg["warmup"] * epochs
    ramp = min(1.0, t / warm + 1e-3) if warm and name != "onecycle" else 1.0
    if name in ("constant", "plateau"):
        return ramp
    if name == "drop":   # x drop_factor at the start of each epoch in drop_at; back to the peak at each restart_at
        epoch = math.floor(t)
        since = max([r for r in cfg["restart_at"] if epoch >= r], default=0)
        return ramp * cfg["drop_factor"] ** sum(since <= e <= epoch for e in cfg["drop_at"])
    if name == "cosine":         # after the warmup, one cosine from 1 to 0 over the remaining epochs
        if t < warm:
            return ramp
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (t - warm) / max(1e-9, epochs - warm))))
    if name == "warm_restarts":   # SGDR: periods t0, t0*t_mult, ... each a cosine from 1 to 0
        period = float(cfg["t0"])
        while t >= period:
            t, period = t - period, period * cfg["t_mult"]
        return ramp * 0.5 * (1 + math.cos(math.pi * t / period))
    if name == "onecycle":        # torch's OneCycleLR: 1/25 up to 1 over 30 % of the run, then down to 1/25/1e4
        up = 0.3 * epochs
        if t < up:
            return 1 / 25 + (1 - 1 / 25) * 0.5 * (1 - math.cos(math.pi * t / up))
        frac = min(1.0, (t - up) / max(1e-9, epochs - up))
        return 4e-6 + (1 - 4e-6) * 0.5 * (1 + math.cos(math.pi * frac))
    raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")


def weight_decay_at(cfg: dict, t: float) -> float:
    """Weight decay at fractional epoch t: off before weight_decay_from (a fraction of the run). With
    adamw that is Adam first, then AdamW: AdamW without decay is exactly Adam."""
    return cfg["weight_decay"] if t >= cfg["weight_decay_from"] * cfg["epochs"] else 0.0


class Plateau:
    """Reduce-on-plateau: scale by `factor` after `patience` epochs without a better metric."""

    def __init__(self, factor: float, patience: int, threshold: float = 1e-3):
        self.factor, self.patience, self.threshold = factor, patience, threshold
        self.scale, self.best, self.bad_epochs = 1.0, math.inf, 0

    def step(self, metric: float) -> None:
        if metric < self.best * (1 - self.threshold):
            self.best, self.bad_epochs = metric, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.patience:
                self.scale *= self.factor
                self.bad_epochs = 0

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, s: dict) -> None:
        self.scale, self.best, self.bad_epochs = s["scale"], s["best"], s["bad_epochs"]
