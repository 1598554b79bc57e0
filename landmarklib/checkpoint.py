"""Checkpoints: the training state and its files. Written atomically, read with weights_only=True
and checked before use, so a truncated, foreign or corrupt file is one clear error naming it,
never a traceback mid-run.

last.pt is a TrainState (what a run carries from one epoch to the next); best.pt its lean part,
what predict needs. In both, "model" holds the weights that were validated: with weight averaging
(ema) the averaged ones, and last.pt keeps the weights training continues from as "train_model".
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_path
from .config import recipe_difference
from .errors import DataError
from .models import load_torch_file

LAST_KEYS = ("model", "optimizer", "scaler", "plateau", "rng", "epoch", "best", "history", "config")
BEST_KEYS = ("model", "epoch", "best", "history", "config")


@dataclass
class TrainState:
    """Everything a run carries from one epoch to the next. `scaler` is fp16's GradScaler (None
    otherwise), `plateau` the reduce-on-plateau state, `generator` this process's augmentation RNG, `ema`
    the weights' moving average (None when off)."""
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: Any
    plateau: Any
    generator: torch.Generator
    config: dict
    ema: Any = None
    history: list[dict] = field(default_factory=list)
    best: float = math.inf
    epoch: int = 0

    def end_epoch(self, row: dict) -> bool:
        """Record an epoch's history row; True when its validation is the best so far."""
        self.history.append(row)
        self.epoch = row["epoch"]
        value = row.get("val_mse_px", math.inf)
        improved = value < self.best
        self.best = min(self.best, value)
        return improved

    @property
    def evaluated(self) -> torch.nn.Module:
        """The model validated, saved as "model" and returned: the EMA's when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def state_dict(self, augment_states: list[torch.Tensor]) -> dict:
        """`augment_states`: every process's augmentation RNG state (one per torchrun rank)."""
        extra = {} if self.ema is None else {"train_model": self.model.state_dict(),
                                              "ema_updates": int(self.ema.n_averaged)}
        return extra | {"model": self.evaluated.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else {},
                "plateau": self.plateau.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "augment": [s.cpu() for s in augment_states]},
                "epoch": self.epoch, "best": self.best, "history": self.history, "config": self.config}

    def save(self, run_dir: Path, improved: bool, augment_states: list[torch.Tensor]) -> None:
        """last.pt, and best.pt (lean: the optimizer lives in last.pt only) when `improved`."""
        state = self.state_dict(augment_states)
        if improved:
            save({k: state[k] for k in BEST_KEYS}, run_dir / "best.pt")
        save(state, run_dir / "last.pt")

    def load(self, ckpt: dict, rank: int = 0) -> None:
        """Continue from a checkpoint read by read_last (process `rank` takes its own RNG state)."""
        self.model.load_state_dict(ckpt.get("train_model", ckpt["model"]))
        if self.ema is not None:
            self.ema.module.load_state_dict(ckpt["model"])
            self.ema.n_averaged.fill_(ckpt.get("ema_updates", 1))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.plateau.load_state_dict(ckpt["plateau"])
        self.generator.set_state(ckpt["rng"]["augment"][rank % len(ckpt["rng"]["augment"])])
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.history, self.best, self.epoch = ckpt["history"], ckpt["best"], ckpt["epoch"]


def read_last(run_dir: Path, run_config: dict) -> dict:
    """run_dir/last.pt, checked to hold the run `run_config` (its config.json) describes: one copied
    from another run (another loss, another arch) would mix two recipes in one history."""
    path = Path(run_dir) / "last.pt"
    ckpt = read(path, tuple(k for k in LAST_KEYS if k != "scaler"))
    diff = recipe_difference(ckpt["config"], run_config, "in last.pt", "in config.json")
    if diff:
        raise DataError(f"{path}: holds another run than {Path(run_dir) / 'config.json'} ({diff}); it was copied "
                        f"from elsewhere: move it away to train this run from the start, or resume the run it "
                        f"came from")
    return ckpt


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
    ckpt = load_torch_file(path, "checkpoint")
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
