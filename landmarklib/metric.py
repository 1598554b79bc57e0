"""The contest metric, in one place: squared error in original-image pixels, mean over the x and y
values of the requested points of an image, then over images (docs/FORMAT.md). Scoring, validation,
plots and notebooks all call these; each works on numpy arrays and on torch tensors (on the device).
"""
from __future__ import annotations

import numpy as np

from .csvfiles import N_QUERY
from .geometry import _float64
from .layout import N_POINTS


def point_error(pred, truth):
    """(N, P, 2) x2 -> (N, P): the squared error of each point, mean over its x and y, in float64."""
    return ((_float64(pred) - _float64(truth)) ** 2).mean(-1)


def mse_per_image(pred, truth):
    """(N, P, 2) x2 -> (N,): the contest's per-image MSE over all P points given."""
    return point_error(pred, truth).mean(-1)


def query_indices(n: int, seed: int = 2020) -> np.ndarray:
    """(n, 30) distinct random point indices per image: the contest protocol, fixed by `seed`,
    so validation asks the same 30 points of each image every epoch."""
    rng = np.random.default_rng(seed)
    return np.argsort(rng.random((n, N_POINTS)), axis=1)[:, :N_QUERY]


def select_points(points, indices):
    """(N, 971, 2) full predictions + (N, 30) requested indices -> (N, 30, 2) in request order."""
    if hasattr(points, "gather"):
        return points.gather(1, indices[:, :, None].expand(-1, -1, points.shape[-1]))
    return np.take_along_axis(np.asarray(points), np.asarray(indices)[:, :, None], axis=1)
