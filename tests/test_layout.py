import numpy as np
import pytest

from landmarklib.layout import FLIP_PERM, GROUPS, N_POINTS, face_template, flip_points
from landmarklib.synth import render, sample_face


def test_groups_cover_every_index_once():
    covered = np.concatenate([np.arange(a, b) for a, b in GROUPS.values()])
    assert np.array_equal(np.sort(covered), np.arange(N_POINTS))


def test_flip_permutation_is_an_involution_and_matches_format():
    assert np.array_equal(FLIP_PERM[FLIP_PERM], np.arange(N_POINTS))
    assert FLIP_PERM[0] == 64 and FLIP_PERM[127] == 63          # jaw sides swap element by element
    assert FLIP_PERM[128] == 272 and FLIP_PERM[200] == 200      # forehead reversed about its centre
    assert FLIP_PERM[273] == 337 and FLIP_PERM[401] == 464
    assert FLIP_PERM[587] == 714 and FLIP_PERM[713] == 840      # iris+eyelid blocks swap
    assert FLIP_PERM[841] == 872 and FLIP_PERM[937] == 968      # lip contours reversed in place
    assert np.array_equal(FLIP_PERM[527:587], np.arange(527, 587))
    assert FLIP_PERM[969] == 970


def test_flip_points_twice_is_identity(rng):
    p = rng.integers(-20, 300, (5, N_POINTS, 2)).astype(float)  # contest labels are integers
    w = rng.integers(50, 400, 5)
    np.testing.assert_array_equal(flip_points(flip_points(p, w), w), p)


def test_template_is_mirror_symmetric_under_the_permutation():
    t = face_template(gaze=(0.4, -0.2), eye_open=0.6, mouth_open=0.3)
    mirrored = (t * [-1, 1])[FLIP_PERM]
    # Gaze is not symmetric: both irises move the same way, so the mirror has the opposite gaze.
    np.testing.assert_allclose(mirrored, face_template(gaze=(-0.4, -0.2), eye_open=0.6, mouth_open=0.3), atol=1e-12)


def test_side_a_is_image_left_on_an_upright_face():
    t = face_template()
    for a, b in [("jaw_a", "jaw_b"), ("brow_a", "brow_b"), ("iris_a", "iris_b"), ("nose_a", "nose_b")]:
        assert t[slice(*GROUPS[a]), 0].mean() < 0 < t[slice(*GROUPS[b]), 0].mean()
    assert t[969, 0] < 0 < t[970, 0]


def _assert_semantics(img: np.ndarray, pts: np.ndarray) -> None:
    """Labels sit on what they name: side a on the image left, pupils dark at the eye centres."""
    for a, b in [("jaw_a", "jaw_b"), ("brow_a", "brow_b"), ("iris_a", "iris_b"), ("eyelid_a", "eyelid_b")]:
        assert pts[slice(*GROUPS[a]), 0].mean() < pts[slice(*GROUPS[b]), 0].mean(), a
    assert pts[128, 0] < pts[200, 0] < pts[272, 0] and pts[841, 0] < pts[872, 0]
    grey = img.astype(float).sum(-1)
    for x, y in pts[969:971]:
        assert grey[int(round(y)), int(round(x))] < 150


@pytest.mark.parametrize("seed", range(6))
def test_mirrored_image_gets_the_permuted_labels(seed):
    face = sample_face(np.random.default_rng(seed))
    img, pts = render(face)
    img = np.asarray(img)
    _assert_semantics(img, pts)
    mirrored_img, mirrored_pts = img[:, ::-1], flip_points(pts, face["width"])
    _assert_semantics(mirrored_img, mirrored_pts)
    # Without re-indexing the mirror puts side a on the right: the check above must see that.
    unpermuted = mirrored_pts[FLIP_PERM]
    with pytest.raises(AssertionError):
        _assert_semantics(mirrored_img, unpermuted)
    # The renderer's own mirror draws the same picture (up to edge rasterization) with the same labels.
    rimg, rpts = render(face, mirror=True)
    np.testing.assert_array_equal(rpts, mirrored_pts)
    assert np.abs(np.asarray(rimg, float) - mirrored_img).mean() < 2.0
