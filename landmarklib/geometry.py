"""Exact geometry between original images, model inputs and normalized targets.

Convention (docs/USAGE.md, "Conventions that decide pixels"): pixel i covers [i - 0.5, i + 0.5].
A per-image affine is stored as (sx, sy, ox, oy) and maps an original point x to the input point
    u = (x + 0.5) * sx - 0.5 + ox
(the same for y). PIL's resize uses the same model (its pixel i covers [i, i + 1]), so
images and points move together exactly.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

MODES = ("crop", "pad")


def fit_affine(width: int, height: int, size: int, mode: str = "crop") -> np.ndarray:
    """The affine from a width x height image to a size x size model input.

    crop: the organizers' recipe, short side scaled to `size`, centre crop (cuts chins on tall images).
    pad:  long side scaled to `size`, the rest padded with black: the whole face stays in view.
    """
    if mode == "crop":
        s = size / min(width, height)
        # The centre box of side size/s in source pixels; its left edge (PIL coords) goes to 0.
        x0, y0 = (width - size / s) / 2, (height - size / s) / 2
        return np.array([s, s, -x0 * s, -y0 * s])
    if mode == "pad":
        s = size / max(width, height)
        nw, nh = max(1, round(width * s)), max(1, round(height * s))
        return np.array([nw / width, nh / height, (size - nw) // 2, (size - nh) // 2], dtype=np.float64)
    raise ValueError(f"unknown resize mode {mode!r}; choose one of {MODES}")


def _float64(x):
    """float64 array or tensor (numpy in, numpy out; torch in, torch out on its device)."""
    return x.double() if hasattr(x, "double") else np.asarray(x, dtype=np.float64)


def to_input(points, affine):
    """Original-image pixels -> input pixels. points (..., P, 2), affine (..., 4); numpy or torch."""
    a = _float64(affine)[..., None, :]
    return (_float64(points) + 0.5) * a[..., :2] - 0.5 + a[..., 2:]


def to_original(points, affine):
    """Input pixels -> original-image pixels: the exact inverse of to_input; numpy or torch."""
    a = _float64(affine)[..., None, :]
    return (_float64(points) - a[..., 2:] + 0.5) / a[..., :2] - 0.5


def to_normalized(points, size: int):
    """Input pixels -> [-1, 1] over the input square (the edges of the outer pixels), as
    grid_sample(align_corners=False) sees it; a mirror is then x -> -x. Works on numpy and torch."""
    return (points + 0.5) * (2.0 / size) - 1.0


def from_normalized(points, size: int):
    return (points + 1.0) * (size / 2.0) - 0.5


# The codec: the one place labels become model targets and predictions become original pixels.

def encode(landmarks, affine, size: int):
    """Original-image landmarks (..., 971, 2) -> normalized targets of a size x size input (float64)."""
    return to_normalized(to_input(landmarks, affine), size)


def decode(pred, affine, size: int):
    """Normalized predictions (..., 971, 2) -> original-image pixels (float64), numpy or torch."""
    return to_original(from_normalized(_float64(pred), size), affine)


def warp_image(img: Image.Image, affine: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Resize + crop/pad `img` as `affine` says, into a size x size x 3 uint8 array.

    JPEGs are decoded at 1/2, 1/4 or 1/8 scale when that still leaves at least one source
    pixel per output pixel (Image.draft): most of the decode cost of large images goes away.
    """
    w, h = img.size
    sx, sy, ox, oy = (float(v) for v in affine)
    if mode == "crop":
        box = (-ox / sx, -oy / sy, (size - ox) / sx, (size - oy) / sy)  # source box, PIL coords
        out_w, out_h = size, size
    else:
        box = (0.0, 0.0, float(w), float(h))
        out_w, out_h = round(w * sx), round(h * sy)
    k = 1.0
    if getattr(img, "format", None) == "JPEG":
        _, draft_box = img.draft("RGB", (max(1, int(np.ceil(w * sx))), max(1, int(np.ceil(h * sy)))))
        k = w / draft_box[2] if draft_box else 1.0  # draft scale: reduced pixel j covers source [jk, (j+1)k]
    img = img.convert("RGB")
    bw, bh = img.size
    # Clamp float round-off (-1e-14) that PIL rejects; the box is inside the image by construction.
    box = (max(0.0, box[0] / k), max(0.0, box[1] / k), min(bw, box[2] / k), min(bh, box[3] / k))
    resized = img.resize((out_w, out_h), Image.Resampling.BILINEAR, box=box, reducing_gap=None)
    if mode == "crop":
        return np.asarray(resized)
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    canvas[int(oy):int(oy) + out_h, int(ox):int(ox) + out_w] = np.asarray(resized)
    return canvas
