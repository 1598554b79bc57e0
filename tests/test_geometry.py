import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from landmarklib.geometry import (MODES, fit_affine, from_normalized, to_input, to_normalized, to_original,
                                  warp_image)


@pytest.mark.parametrize("mode", MODES)
def test_round_trip_is_exact_for_random_sizes(mode, rng):
    for _ in range(300):
        w, h = rng.integers(16, 2500, 2)
        size = int(rng.choice([32, 75, 128, 224, 299]))
        a = fit_affine(int(w), int(h), size, mode)
        p = rng.uniform(-50, 2600, (971, 2))
        assert np.abs(to_original(to_input(p, a), a) - p).max() < 1e-4
        assert np.abs(from_normalized(to_normalized(to_input(p, a), size), size) - to_input(p, a)).max() < 1e-4


def test_crop_maps_the_centre_box_onto_the_input_square():
    a = fit_affine(200, 100, 50, "crop")                 # scale 0.5, 50 px cut off each side
    np.testing.assert_allclose(to_input(np.array([[49.5, -0.5], [149.5, 99.5]]), a), [[-0.5, -0.5], [49.5, 49.5]])


def test_pad_keeps_the_whole_image_centred():
    a = fit_affine(100, 200, 50, "pad")                  # scale 0.25, 12 px of padding left and right
    np.testing.assert_allclose(to_input(np.array([[-0.5, -0.5], [99.5, 199.5]]), a), [[11.5, -0.5], [36.5, 49.5]])


def test_normalized_mirror_is_negation():
    size = 64
    u = np.array([0.0, 10.0, 63.0])
    np.testing.assert_allclose(to_normalized(size - 1 - u, size), -to_normalized(u, size))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("jpeg", [False, True])
def test_warped_image_and_points_agree(mode, jpeg):
    """A bright disc drawn at a known point lands where to_input puts that point, also when
    the JPEG is decoded at reduced scale (draft)."""
    w, h, x, y, r = 900, 600, 612.0, 213.0, 25
    img = Image.new("RGB", (w, h))
    ImageDraw.Draw(img).ellipse((x - r + 0.5, y - r + 0.5, x + r + 0.5, y + r + 0.5), fill=(255, 255, 255))
    if jpeg:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=95)
        img = Image.open(io.BytesIO(buf.getvalue()))
    a = fit_affine(w, h, 96, mode)
    arr = warp_image(img, a, 96, mode).astype(float).sum(-1)
    yy, xx = np.mgrid[:96, :96]
    centroid = np.array([(arr * xx).sum(), (arr * yy).sum()]) / arr.sum()
    np.testing.assert_allclose(centroid, to_input(np.array([[x, y]]), a)[0], atol=0.05)


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="unknown resize mode"):
        fit_affine(10, 10, 8, "stretch")
