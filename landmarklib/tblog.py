"""TensorBoard event files for a run, in <run_dir>/tb beside history.csv (which stays the source of
truth): train loss and LR every few steps, per epoch the validation MSE, images/s and data wait,
and a few validation images with their predicted landmarks; when the run finishes, its settings and
final validation MSE for the HParams dashboard.

    tensorboard --logdir runs          (Colab: %load_ext tensorboard, %tensorboard --logdir ...)
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np


class RunLog:
    """A SummaryWriter that is a no-op where TensorBoard is not installed (one warning says so)."""

    def __init__(self, run_dir: Path | str | None):
        self.writer = None
        if run_dir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            warnings.warn(f"no TensorBoard event files ({e}); pip install tensorboard", stacklevel=2)
            return
        self.writer = SummaryWriter(str(Path(run_dir) / "tb"))

    def step(self, step: int, loss: float, lr: float) -> None:
        """Called where the loop already read the loss back to the host (no extra sync)."""
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/lr", lr, step)

    def epoch(self, epoch: int, stats: dict) -> None:
        if self.writer is None:
            return
        for key in ("val_mse_px", "val_mse30_px"):
            if key in stats:
                self.writer.add_scalar(f"val/{key}", stats[key], epoch)
        for key in ("train_loss", "images_per_s", "data_wait", "lr"):
            self.writer.add_scalar(f"epoch/{key}", stats[key], epoch)
        self.writer.flush()

    def images(self, epoch: int, images: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> None:
        """Validation images (N, S, S, 3) uint8 with predictions (coloured by part) over the truth
        (white), both (N, 971, 2) in input pixels."""
        if self.writer is None:
            return
        import matplotlib.pyplot as plt

        from .plots import draw_landmarks
        fig, axes = plt.subplots(1, len(images), figsize=(2.5 * len(images), 2.7), squeeze=False)
        for ax, img, p, t in zip(axes[0], images, pred, truth):
            draw_landmarks(ax, img, p, t, size=0.5)
        fig.tight_layout()
        self.writer.add_figure("val/predictions", fig, epoch)   # closes the figure

    def hparams(self, settings: dict, metrics: dict) -> None:
        """A finished run's settings and final metrics where TensorBoard's HParams dashboard reads them
        (this run's tb folder), so `tensorboard --logdir runs` compares every run side by side."""
        if self.writer is None:
            return
        plain = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in settings.items()}
        self.writer.add_hparams(plain, metrics, run_name=".")   # ".": beside the scalars, not a new run

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
