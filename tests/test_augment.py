import numpy as np
import torch
from PIL import Image

from landmarklib.augment import augment, flip_targets
from landmarklib.geometry import fit_affine, to_input, to_normalized, warp_image
from landmarklib.synth import render, sample_face

SIZE = 96


def _square_face(seed):
    face = sample_face(np.random.default_rng(seed))
    face["height"] = face["width"]            # square: the crop is mirror-symmetric, so flips commute with it
    return face


def _model_input(img: Image.Image, pts: np.ndarray):
    a = fit_affine(*img.size, SIZE, "crop")
    x = torch.from_numpy(np.array(warp_image(img, a, SIZE, "crop")))[None]
    t = torch.from_numpy(to_normalized(to_input(pts, a), SIZE)).float()[None]
    return x, t


def test_flip_matches_a_mirrored_render():
    face = _square_face(4)
    x, t = _model_input(*render(face))
    mx, mt = _model_input(*render(face, mirror=True))
    images, targets = x.repeat(8, 1, 1, 1), t.repeat(8, 1, 1)
    out, out_t = augment(images, targets, "flip", torch.Generator().manual_seed(0))
    flipped = (out_t[:, 0, 0] != t[0, 0, 0])
    assert 0 < flipped.sum() < 8                                  # some flipped, some not
    for i in range(8):
        want_img, want_t = (mx, mt) if flipped[i] else (x, t)
        assert torch.allclose(out_t[i], want_t[0], atol=1e-5)
        # the picture agrees with the mirrored render up to edge rasterization
        assert (out[i] * 255 - want_img[0].permute(2, 0, 1).float()).abs().mean() < 3.0
    assert torch.equal(flip_targets(flip_targets(t)), t)


def test_full_augment_moves_points_with_pixels():
    """A bright dot and all 971 targets at the same place stay together under rotation/zoom/shift."""
    img = torch.zeros(16, SIZE, SIZE, 3, dtype=torch.uint8)
    centre = torch.tensor([60.0, 30.0])
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    disc = ((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) <= 16
    img[:, disc] = 255
    t = to_normalized(centre, SIZE).expand(16, 971, 2).clone()
    out, out_t = augment(img, t, "full", torch.Generator().manual_seed(1))
    assert out.shape == (16, 3, SIZE, SIZE) and out.is_contiguous(memory_format=torch.channels_last)
    moved = 0
    for i in range(16):
        grey = out[i].mean(0)
        w = (grey > 0.5 * grey.max()).float()
        got = torch.stack([(w * xx).sum(), (w * yy).sum()]) / w.sum()
        want = (out_t[i, 0] + 1) * SIZE / 2 - 0.5
        assert torch.allclose(got, want, atol=0.6), (i, got, want)
        moved += float((want - centre).norm() > 1)
    assert moved >= 12     # the augmentation did move things
