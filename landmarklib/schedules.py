"""Learning-rate schedules as plain functions of the (fractional) epoch, nanoGPT style.

The training loop sets every param group's lr to base_lr * lr_factor(cfg, t) * plateau.scale
before each step, with t = epoch + step / steps_per_epoch. Only reduce-on-plateau keeps
state (Plateau, saved in the checkpoint).
"""
from __future__ import annotations

import math

SCHEDULES = ("constant", "drop", "plateau", "cosine", "warm_restarts", "onecycle")


def default_drop_at(epochs: int) -> list[int]:
    """Where the LR drops when drop_at is not given: at 2/3 of the run (8 of 12, the seed recipe)."""
    return [max(1, round(epochs * 2 / 3))]


def lr_factor(cfg: dict, t: float) -> float:
    """Multiplier of cfg['lr'] at fractional epoch t (0 <= t <= cfg['epochs']).

    warmup_epochs > 0 ramps any schedule but onecycle (which has its own) linearly up from ~0."""
    name, epochs, warm = cfg["schedule"], cfg["epochs"], cfg.get("warmup_epochs", 0)
    ramp = min(1.0, t / warm + 1e-3) if warm and name != "onecycle" else 1.0
    if name in ("constant", "plateau"):
        return ramp
    if name == "drop":   # x drop_factor at the start of each epoch listed in drop_at
        return ramp * cfg["drop_factor"] ** sum(math.floor(t) >= e for e in cfg["drop_at"])
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
