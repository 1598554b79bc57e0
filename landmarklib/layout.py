"""The 971-point layout: named groups, the canonical face template and the flip permutation.

Everything here follows docs/FORMAT.md. Index i on the image-left side mirrors the
index given by FLIP_PERM[i]; the permutation is an involution.
"""
from __future__ import annotations

import numpy as np

N_POINTS = 971

# name -> (start, stop) half-open index ranges, in docs/FORMAT.md's order.
GROUPS: dict[str, tuple[int, int]] = {
    "jaw_a": (0, 64),
    "jaw_b": (64, 128),
    "forehead": (128, 273),
    "brow_a": (273, 337),
    "brow_b": (337, 401),
    "nose_a": (401, 464),
    "nose_b": (464, 527),
    "nose_midline": (527, 587),
    "iris_a": (587, 650),
    "eyelid_a": (650, 714),
    "iris_b": (714, 777),
    "eyelid_b": (777, 841),
    "lip_upper_outer": (841, 873),
    "lip_upper_inner": (873, 905),
    "lip_lower_outer": (905, 937),
    "lip_lower_inner": (937, 969),
    "eye_centres": (969, 971),
}

# Coarser parts for per-part error reports and colours in plots.
PARTS: dict[str, list[str]] = {
    "jaw": ["jaw_a", "jaw_b"],
    "forehead": ["forehead"],
    "brows": ["brow_a", "brow_b"],
    "nose": ["nose_a", "nose_b", "nose_midline"],
    "eyes": ["iris_a", "eyelid_a", "iris_b", "eyelid_b", "eye_centres"],
    "lips": ["lip_upper_outer", "lip_upper_inner", "lip_lower_outer", "lip_lower_inner"],
}

PART_COLOURS: dict[str, str] = {
    "jaw": "#1f77b4", "forehead": "#17becf", "brows": "#8c564b",
    "nose": "#ff7f0e", "eyes": "#2ca02c", "lips": "#d62728",
}


def group_slice(name: str) -> slice:
    start, stop = GROUPS[name]
    return slice(start, stop)


def part_of_points() -> np.ndarray:
    """Array of 971 part names, one per point index."""
    out = np.empty(N_POINTS, dtype=object)
    for part, groups in PARTS.items():
        for g in groups:
            out[group_slice(g)] = part
    return out


# Under a horizontal flip (docs/FORMAT.md): these groups swap with each other element by element ...
MIRROR_PAIRS = [("jaw_a", "jaw_b"), ("brow_a", "brow_b"), ("nose_a", "nose_b"), ("iris_a", "iris_b"),
                ("eyelid_a", "eyelid_b")]
# ... these side-to-side contours reverse in place (the two eye centres swap), and the rest stay.
REVERSED = ["forehead", "lip_upper_outer", "lip_upper_inner", "lip_lower_outer", "lip_lower_inner", "eye_centres"]


def _flip_permutation() -> np.ndarray:
    perm = np.arange(N_POINTS)
    for a, b in MIRROR_PAIRS:
        perm[group_slice(a)], perm[group_slice(b)] = np.arange(*GROUPS[b]), np.arange(*GROUPS[a])
    for g in REVERSED:
        perm[group_slice(g)] = np.arange(*GROUPS[g])[::-1]
    return perm


FLIP_PERM: np.ndarray = _flip_permutation()
FLIP_PERM.setflags(write=False)


def flip_points(points: np.ndarray, width: float) -> np.ndarray:
    """Mirror landmarks (..., 971, 2) of an image `width` pixels wide: x -> W - 1 - x, re-indexed.

    W - 1 - x (not W - x) because pixel centres sit at integers (geometry.py, docs/USAGE.md).
    """
    out = np.array(points, dtype=np.float64, copy=True)
    out[..., 0] = np.expand_dims(np.asarray(width, dtype=np.float64), -1) - 1 - out[..., 0]
    return out[..., FLIP_PERM, :]


# ---------------------------------------------------------------------------------------
# Canonical face template: a frontal face in a frame with its centre at (0, 0), x to the
# image right, y down, half-width 1. Built from left-side halves mirrored exactly, so that
# flip_points of the template (about x = 0) gives the template back bit for bit.

def _arc(cx: float, cy: float, rx: float, ry: float, t0: float, t1: float, n: int) -> np.ndarray:
    t = np.linspace(t0, t1, n)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _mirror(p: np.ndarray) -> np.ndarray:
    return p * np.array([-1.0, 1.0])


def _side_to_side(left_half: np.ndarray, centre: np.ndarray | None = None) -> np.ndarray:
    """A contour running left to right from its left half (ordered outer -> centre)."""
    parts = [left_half] + ([centre[None]] if centre is not None else []) + [_mirror(left_half)[::-1]]
    return np.concatenate(parts)


def _closed(n: int, cx: float, cy: float, rx: float, ry_top: float, ry_bottom: float) -> np.ndarray:
    """A closed almond/oval contour of n points (upper half with ry_top, lower with ry_bottom)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ry = np.where(np.sin(t) < 0, ry_top, ry_bottom)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def face_template(eye_open: float = 1.0, mouth_open: float = 0.0, gaze: tuple[float, float] = (0.0, 0.0),
                  jaw_width: float = 0.85, brow_raise: float = 0.0, mouth_width: float = 0.42,
                  nose_width: float = 0.22) -> np.ndarray:
    """Canonical 971x2 face in template units, with a few expression/shape knobs."""
    pts = np.zeros((N_POINTS, 2))
    # Jaw: temple (-1, 0) down to just short of the chin, one side; the other mirrored.
    jaw = _arc(0, 0, 1.0, 1.25, np.pi, np.pi / 2 + 0.04, 64)
    jaw[:, 0] *= np.linspace(1.0, jaw_width, 64) ** 0.5
    pts[0:64], pts[64:128] = jaw, _mirror(jaw)
    # Forehead arc: left temple over the top to the right temple; 200 is the centre.
    half = _arc(0, 0, 1.0, 1.15, np.pi, np.pi * 1.5, 73)[:72]
    pts[128:273] = _side_to_side(half, np.array([0.0, -1.15]))
    # Eyebrows: closed thick arcs above the eyes.
    t = np.linspace(0, 1, 32)
    upper = np.stack([-0.78 + 0.6 * t, -0.42 - brow_raise - 0.1 * np.sin(np.pi * t)], axis=1)
    lower = upper[::-1] + np.array([0.0, 0.07])
    brow = np.concatenate([upper, lower])
    pts[273:337], pts[337:401] = brow, _mirror(brow)
    # Nose side: from the bridge down the wing to the nostril.
    s = np.linspace(0, 1, 63)
    nose = np.stack([-0.07 - (nose_width - 0.07) * np.sin(np.pi * 0.5 * s) ** 3,
                     -0.28 + 0.68 * s], axis=1)
    nose[50:, 0] = np.linspace(nose[50, 0], -0.05, 13)
    nose[50:, 1] = nose[50:, 1] + 0.05 * np.sin(np.linspace(0, np.pi, 13))
    pts[401:464], pts[464:527] = nose, _mirror(nose)
    # Nose midline: from just above the lips up to the forehead, on x = 0.
    pts[527:587] = np.stack([np.zeros(60), np.linspace(0.5, -0.55, 60)], axis=1)
    # Eyes: iris circle (63) then eyelid almond (64); eye centre = iris centre.
    ex, ey, eye_rx = -0.42, -0.2, 0.2
    iris_c = np.array([ex + gaze[0] * 0.06, ey + gaze[1] * 0.03])
    iris_r = 0.075
    iris = _closed(63, iris_c[0], iris_c[1], iris_r, iris_r, iris_r)
    lid = _closed(64, ex, ey, eye_rx, 0.09 * eye_open + 0.01, 0.07 * eye_open + 0.01)
    pts[587:650], pts[650:714] = iris, lid
    pts[714:777], pts[777:841] = _mirror(iris), _mirror(lid)
    pts[969], pts[970] = iris_c, _mirror(iris_c[None])[0]
    # Gaze moves both irises the same way in the image; mirroring a face mirrors gaze too.
    pts[714:777, 0] += 2 * gaze[0] * 0.06
    pts[970, 0] += 2 * gaze[0] * 0.06
    # Lips: four side-to-side contours of 32 points (16 per half), corner -> centre.
    u = np.linspace(0, 1, 17)[:16]
    mw, my, gap = mouth_width, 0.62, 0.012 + 0.08 * mouth_open
    xs = -mw * (1 - u)
    bow = np.sin(np.pi * 0.5 * u)
    contours = {
        841: my - gap - 0.09 * bow,            # upper outer
        873: my - gap - 0.015 * bow,           # upper inner
        905: my + gap + 0.11 * bow,            # lower outer
        937: my + gap + 0.02 * bow,            # lower inner
    }
    for start, ys in contours.items():
        pts[start:start + 32] = _side_to_side(np.stack([xs, ys], axis=1))
    return pts
