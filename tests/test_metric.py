"""metric.py: the contest MSE, on numpy and torch alike."""
import numpy as np
import torch

from landmarklib.geometry import decode, encode, fit_affine
from landmarklib.metric import mse_per_image, point_error, select_points


def test_the_metric_is_the_same_on_numpy_and_torch_and_after_the_codec(rng):
    truth = rng.uniform(0, 300, (5, 971, 2))
    pred = truth + rng.normal(0, 2, truth.shape)
    idx = np.stack([rng.permutation(971)[:30] for _ in range(5)])
    numpy_mse = mse_per_image(select_points(pred, idx), select_points(truth, idx))
    torch_mse = mse_per_image(select_points(torch.from_numpy(pred), torch.from_numpy(idx)),
                              select_points(torch.from_numpy(truth), torch.from_numpy(idx)))
    np.testing.assert_allclose(torch_mse.numpy(), numpy_mse, rtol=1e-12)
    np.testing.assert_allclose(point_error(pred, truth).mean(-1), ((pred - truth) ** 2).mean((1, 2)))
    affine = np.stack([fit_affine(300, 260, 64, "crop") for _ in range(5)])
    np.testing.assert_allclose(decode(encode(truth, affine, 64), affine, 64), truth, atol=1e-9)
    np.testing.assert_allclose(decode(torch.from_numpy(encode(truth, affine, 64)), torch.from_numpy(affine), 64).numpy(),
                               truth, atol=1e-9)
