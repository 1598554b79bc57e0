"""Synthetic demo set in the exact contest layout (docs/FORMAT.md).

    python -m landmarklib.synth OUT_DIR --n-train 1000 --n-test 200 --seed 0 --bad-fraction 0.03

Each face is the canonical 971-point template (layout.face_template) with random shape
and expression knobs, a random pose (rotation, scale, translation) and background
clutter, drawn with the point groups themselves, so every label sits on what it names.
Besides the real layout it writes the test ground truth as test/landmarks.csv and, when
--bad-fraction > 0, the deliberately corrupted training rows as train/planted_bad.csv
(a fraction of all rows, placed in the first 80 %: validation stays clean).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .atomic import atomic_path
from .csvfiles import LANDMARK_COLUMNS, N_QUERY
from .data import split_indices
from .errors import DataError, cli
from .layout import GROUPS, N_POINTS, face_template, flip_points
from .progress import bar
from .workers import process_pool

SUPERSAMPLE = 2
CORRUPTIONS = ("shifted", "swapped", "scrambled", "mirrored", "shrunk")


# Render styles. "demo" is the demo set's (what every default was tuned on). "alt" is a second domain:
# larger images with smaller, more tilted faces, darker skin, more clutter, sensor noise, blur and
# heavier JPEG (the fine-tuning rehearsal pretrains on it; the EDA threshold was designed on it and
# demo). "small" was held out from all of that: small images, large upright pale faces, little
# clutter, strong noise and JPEG at low quality.
STYLES: dict[str, dict] = {
    "demo": {"width": (100, 401), "height": (100, 400), "angle_deg": 12, "scale": (0.27, 0.38),
             "skin": (120, 240), "brow": (20, 90), "lips": (120, 220), "clutter": (4, 14), "quality": (80, 96),
             "noise": 0.0, "blur": 0.0},
    "alt": {"width": (200, 701), "height": (200, 900), "angle_deg": 18, "scale": (0.2, 0.32),
            "skin": (60, 200), "brow": (0, 60), "lips": (90, 180), "clutter": (8, 24), "quality": (55, 80),
            "noise": 6.0, "blur": 0.8},
    "small": {"width": (80, 261), "height": (80, 300), "angle_deg": 8, "scale": (0.3, 0.42),
              "skin": (150, 255), "brow": (40, 120), "lips": (150, 240), "clutter": (2, 8), "quality": (35, 65),
              "noise": 10.0, "blur": 0.0},
}


def sample_face(rng: np.random.Generator, style: str = "demo") -> dict:
    """Random face of a render `style` (STYLES): image size, template knobs, pose and colours (plain
    numbers, JSON-able)."""
    st = STYLES[style]
    w = int(rng.integers(*st["width"]))
    h = int(np.clip(w * rng.uniform(0.8, 1.35), *st["height"]))
    face = {
        "width": w, "height": h,
        "knobs": {"eye_open": float(rng.uniform(0.3, 1.2)), "mouth_open": float(rng.uniform(0, 1) ** 2),
                  "gaze": (float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1))),
                  "jaw_width": float(rng.uniform(0.7, 1.0)), "brow_raise": float(rng.uniform(-0.04, 0.08)),
                  "mouth_width": float(rng.uniform(0.32, 0.5)), "nose_width": float(rng.uniform(0.16, 0.28))},
        "angle": float(np.deg2rad(rng.normal(0, st["angle_deg"]))),
        "scale": float(rng.uniform(*st["scale"]) * min(w, h)),
        "aspect": float(rng.uniform(0.85, 1.12)),
        "centre": (float(w / 2 + rng.uniform(-0.1, 0.1) * w), float(h / 2 + rng.uniform(-0.08, 0.1) * h)),
        "colours": {k: tuple(int(v) for v in rng.integers(lo, hi, 3)) for k, (lo, hi) in
                    [("skin", st["skin"]), ("brow", st["brow"]), ("iris", (30, 160)), ("lips", st["lips"]),
                     ("bg", (0, 255))]},
        "clutter": [(int(rng.integers(3)), *(float(v) for v in rng.uniform(-0.1, 1.1, 4)),
                     tuple(int(v) for v in rng.integers(0, 256, 3))) for _ in range(int(rng.integers(*st["clutter"])))],
        "border": [int(v) for v in (rng.uniform(size=4) < 0.08) * rng.integers(4, 30, 4)],
        "quality": int(rng.integers(*st["quality"])),
    }
    if st["noise"] or st["blur"]:   # drawn only here, so the demo style's stream (and its files) stay as they were
        face |= {"noise": st["noise"], "blur": st["blur"], "noise_seed": int(rng.integers(2 ** 31))}
    return face


def face_points(face: dict) -> np.ndarray:
    """(971, 2) landmarks of `face` in original-image pixels (float)."""
    t = face_template(**face["knobs"]) * np.array([face["aspect"], 1.0])
    c, s = np.cos(face["angle"]), np.sin(face["angle"])
    return t @ np.array([[c, s], [-s, c]]) * face["scale"] + np.array(face["centre"])


def _poly(draw: ImageDraw.ImageDraw, pts: np.ndarray, fill=None, outline=None, width: int = 1) -> None:
    xy = [tuple(p) for p in (pts + 0.5) * SUPERSAMPLE - 0.5]   # pixel-centre convention at 2x
    if fill is not None:
        draw.polygon(xy, fill=fill)
    if outline is not None:
        draw.line(xy + xy[:1], fill=outline, width=width * SUPERSAMPLE)


def render(face: dict, mirror: bool = False) -> tuple[Image.Image, np.ndarray]:
    """Draw `face`; with mirror=True draw its mirror image: the same picture flipped left to
    right, whose labels are flip_points of the unmirrored labels (re-indexed by docs/FORMAT.md)."""
    w, h = face["width"], face["height"]
    pts = face_points(face)
    mx = (lambda x: w - 1 - x) if mirror else (lambda x: x)
    if mirror:
        pts = flip_points(pts, w)
    col = face["colours"]
    img = Image.new("RGB", (w * SUPERSAMPLE, h * SUPERSAMPLE), col["bg"])
    d = ImageDraw.Draw(img)
    ss = lambda v: (v + 0.5) * SUPERSAMPLE - 0.5  # original -> supersampled pixel coordinates
    for kind, x0, y0, x1, y1, c in face["clutter"]:
        xa, xb = sorted((ss(mx(x0 * w)), ss(mx(x1 * w))))
        box = [xa, ss(min(y0, y1) * h), xb, ss(max(y0, y1) * h)]
        if kind == 0:
            d.rectangle(box, fill=c)
        elif kind == 1:
            d.ellipse(box, fill=c)
        else:
            d.line([(ss(mx(x0 * w)), ss(y0 * h)), (ss(mx(x1 * w)), ss(y1 * h))], fill=c, width=3 * SUPERSAMPLE)
    g = {k: pts[a:b] for k, (a, b) in GROUPS.items()}
    skin = col["skin"]
    dark = tuple(int(v * 0.6) for v in skin)
    outline = np.concatenate([g["forehead"], g["jaw_b"], g["jaw_a"][::-1]])
    _poly(d, outline, fill=skin, outline=dark, width=2)
    for side in "ab":
        _poly(d, g[f"brow_{side}"], fill=col["brow"])
        _poly(d, g[f"eyelid_{side}"], fill=(245, 245, 240))
        _poly(d, g[f"iris_{side}"], fill=col["iris"])
    for c in g["eye_centres"]:
        r = 0.03 * face["scale"]
        _poly(d, c + r * np.stack([np.cos(np.linspace(0, 6.28, 16)), np.sin(np.linspace(0, 6.28, 16))], 1),
              fill=(10, 10, 10))
    for side in "ab":
        _poly(d, g[f"eyelid_{side}"], outline=(40, 30, 30), width=1)
        nose = g[f"nose_{side}"]
        d.line([tuple(p) for p in (nose + 0.5) * SUPERSAMPLE - 0.5], fill=dark, width=2 * SUPERSAMPLE)
    _poly(d, np.concatenate([g["lip_upper_inner"], g["lip_lower_inner"][::-1]]), fill=(60, 20, 25))
    _poly(d, np.concatenate([g["lip_upper_outer"], g["lip_upper_inner"][::-1]]), fill=col["lips"])
    _poly(d, np.concatenate([g["lip_lower_outer"], g["lip_lower_inner"][::-1]]), fill=col["lips"])
    img = img.resize((w, h), Image.Resampling.BOX)   # exact 2x -> 1x in the pixel-centre convention
    if face.get("blur"):
        img = img.filter(ImageFilter.GaussianBlur(face["blur"]))
    if face.get("noise"):
        a = np.asarray(img, dtype=np.float32)
        noise = np.random.default_rng(face["noise_seed"]).normal(0, face["noise"], a.shape)
        a = (a + (noise[:, ::-1] if mirror else noise)).clip(0, 255)   # the mirror's noise is mirrored too
        img = Image.fromarray(np.rint(a).astype(np.uint8))
    left, top, right, bottom = face["border"]
    if mirror:
        left, right = right, left
    if any(face["border"]):
        a = np.asarray(img).copy()
        a[:top], a[h - bottom:], a[:, :left], a[:, w - right:] = 0, 0, 0, 0
        img = Image.fromarray(a)
    return img, pts


def _face_rng(seed: int, split: str, i: int) -> np.random.Generator:
    return np.random.default_rng([seed, 0 if split == "train" else 1, i])


def _name(rng: np.random.Generator) -> str:
    return rng.bytes(16).hex() + ".jpg"


def _make_one(args: tuple) -> tuple[str, np.ndarray, float]:
    seed, split, i, image_dir, style = args
    rng = _face_rng(seed, split, i)
    name = _name(rng)
    face = sample_face(rng, style)
    img, pts = render(face)
    img.save(os.path.join(image_dir, name), "JPEG", quality=face["quality"])
    return name, pts, face["scale"]


def corrupt(points: np.ndarray, kind: str, rng: np.random.Generator, width: int, other: np.ndarray,
            face_size: float) -> np.ndarray:
    """One planted annotation error of `kind` (see CORRUPTIONS) applied to (971, 2) points."""
    p = points.copy()
    centre = p.mean(0)
    if kind == "shifted":        # the whole shape moved by 15-30 % of the face size
        a = rng.uniform(0, 2 * np.pi)
        return p + rng.uniform(0.15, 0.3) * face_size * np.array([np.cos(a), np.sin(a)])
    if kind == "swapped":        # another image's labels
        return other.copy()
    if kind == "scrambled":      # a random 20-40 % of the points exchange positions
        idx = rng.choice(N_POINTS, int(rng.uniform(0.2, 0.4) * N_POINTS), replace=False)
        p[idx] = p[rng.permutation(idx)]
        return p
    if kind == "mirrored":       # mirrored without re-indexing: left and right labels swapped
        p[:, 0] = width - 1 - p[:, 0]
        return p
    if kind == "shrunk":         # rescaled about the centroid
        return centre + (p - centre) * rng.uniform(0.6, 0.78)
    raise ValueError(f"unknown corruption {kind!r}")


def _write_landmarks(path: Path, names: list[str], points: np.ndarray) -> None:
    values = np.rint(points.reshape(len(names), -1)).astype(np.int64)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        f.write("\t".join(LANDMARK_COLUMNS) + "\n")
        for n, row in zip(names, values):
            f.write(n + "\t" + "\t".join(map(str, row.tolist())) + "\n")


def make_dataset(out_dir: Path | str, n_train: int = 1000, n_test: int = 200, seed: int = 0,
                 bad_fraction: float = 0.0, workers: int | None = None, style: str = "demo") -> Path:
    """Write the synthetic set in a render `style` (STYLES); deterministic for a seed (file names
    included). Only into a missing or empty folder: synthetic files never mix with anything else (a
    contest folder)."""
    if style not in STYLES:
        raise ValueError(f"style: unknown render style {style!r}; choose one of {', '.join(STYLES)}")
    out = Path(out_dir)
    marker = out / "SYNTHETIC.json"   # first in, so a killed run's half-made set can be made again
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not marker.is_file())):
        raise DataError(f"{out}: not empty; the synthetic set is only written into a new or empty folder "
                        f"(it would mix with or replace what is there)")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(marker) as tmp:
        tmp.write_text(json.dumps({"n_train": n_train, "n_test": n_test, "seed": seed, "bad_fraction": bad_fraction}
                                  | ({"style": style} if style != "demo" else {})))
    workers = workers or os.cpu_count() or 1
    results = {}
    for split, n in (("train", n_train), ("test", n_test)):
        image_dir = out / split / "images"
        image_dir.mkdir(parents=True, exist_ok=True)
        jobs = [(seed, split, i, str(image_dir), style) for i in range(n)]
        if workers > 1 and n > 50:
            with process_pool(workers) as ex:
                res = list(bar(ex.map(_make_one, jobs, chunksize=16), total=n, desc=f"synth {split}"))
        else:
            res = [_make_one(j) for j in bar(jobs, desc=f"synth {split}", disable=n < 200)]
        results[split] = res
    train_names = [r[0] for r in results["train"]]
    train_pts = np.stack([r[1] for r in results["train"]]) if n_train else np.zeros((0, N_POINTS, 2))
    rng = np.random.default_rng([seed, 2])
    n_bad = int(round(bad_fraction * n_train))
    # Corruptions go into the organizers' train split (the first 80 % of rows) only, so validation
    # is as clean as the test ground truth and an ablation measures what bad labels do to training.
    n_split = max(n_bad, len(split_indices(n_train)[0]))
    bad_rows = np.sort(rng.choice(n_split, n_bad, replace=False)) if n_bad else np.array([], int)
    planted = []
    labels = train_pts.copy()
    for j, r in enumerate(bad_rows):
        kind = CORRUPTIONS[j % len(CORRUPTIONS)]
        other = train_pts[(r + 1 + int(rng.integers(n_train - 1))) % n_train]
        width = Image.open(out / "train" / "images" / train_names[r]).size[0]
        labels[r] = corrupt(train_pts[r], kind, rng, width, other, results["train"][r][2] * 2)
        planted.append((train_names[r], kind))
    _write_landmarks(out / "train" / "landmarks.csv", train_names, labels)
    if n_bad:
        with atomic_path(out / "train" / "planted_bad.csv") as tmp:
            tmp.write_text("file_name,kind\n" + "".join(f"{n},{k}\n" for n, k in planted))
    test_names = [r[0] for r in results["test"]]
    if n_test:
        _write_landmarks(out / "test" / "landmarks.csv", test_names, np.stack([r[1] for r in results["test"]]))
    with atomic_path(out / "test" / "test_points.csv") as tmp:
        tmp.write_text("file_name\tpoint_index_list\n" + "".join(
            f"{n}\t{json.dumps(rng.choice(N_POINTS, N_QUERY, replace=False).tolist())}\n" for n in test_names))
    return out


@cli
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m landmarklib.synth", description=__doc__.splitlines()[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bad-fraction", type=float, default=0.0)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--style", choices=tuple(STYLES), default="demo", help="render style (alt: held out from tuning)")
    a = p.parse_args(argv)
    if not 0 <= a.bad_fraction < 1:
        raise ValueError(f"--bad-fraction must be in [0, 1), got {a.bad_fraction}")
    if a.n_train < 10 or a.n_test < 1 or a.seed < 0:
        raise ValueError(f"--n-train must be at least 10 (got {a.n_train}), --n-test at least 1 (got {a.n_test}), "
                         f"--seed 0 or more (got {a.seed})")
    make_dataset(a.out_dir, a.n_train, a.n_test, a.seed, a.bad_fraction, a.workers, a.style)
    print(f"wrote {a.n_train} train + {a.n_test} test images to {a.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
