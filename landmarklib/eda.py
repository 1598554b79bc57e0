"""Bad-annotation detector: ranks every training annotation by how implausible it is.

    python -m landmarklib.eda --data-dir D --out bad_annotations.csv [--no-model] [--k 12]

Stage 1 (shape only, seconds): points far outside the image; a statistical shape model
(generalized Procrustes alignment by similarity transforms, a low-rank PCA fitted on the
inliers) scoring each shape by what no combination of normal shapes explains; group
geometry (left/right order, lips inside out, collapsed contours).
Stage 2 (image evidence): out-of-fold predictions of a quick model (k folds, so no image is
scored by a model that saw its label), ranked by the label/prediction disagreement
normalized by face size. It sees what no shape statistic can: a plausible shape in the
wrong place (shifted, rescaled, another image's labels).
Scores are robust z-scores, (x - median) / (1.4826 MAD). Each stage's threshold is set from its
own scores on the data at hand (tail_threshold: the clean bulk's upper tail, fitted below the
95th percentile where bad rows sit, extrapolated to where it would leave half a clean row above);
a row is flagged when any stage's z exceeds its threshold, or a geometry rule fails. A fixed k
instead (the old default was 12) applies one threshold to every stage.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_path
from .cache import Cache, build_cache, cache_root
from .config import RECIPES, make_config
from .csvfiles import read_landmark_lines
from .data import SPLIT_CSV, Split, fingerprint, load_split
from .errors import DataError, check_output, cli
from .images import image_sizes
from .layout import GROUPS
from .loader import BatchLoader
from .predict import predict_normalized
from .progress import bar
from .runtime import autocast_dtype, resolve_device
from .engine import train_model

Z_DEFAULT = 12.0        # the old default threshold of every stage (k=12); the tests' line between clean and planted
GEOMETRY_Z = 100.0      # score given to a failed geometry rule: above any sane threshold
EXPECTED_FALSE = 0.5    # tail_threshold: clean rows a stage's fitted tail leaves above its threshold
TAIL_QUANTILE = 0.95    # tail_threshold: the fit's upper edge; bad rows (a few %) lie above it
MIN_THRESHOLD = 6.0     # no stage's threshold goes below this robust z, whatever its tail
MEDIAN_SAMPLE = 20_000  # rows whose median shape starts an out-of-fold model's head
MEAN_SAMPLE = 20_000    # shapes the Procrustes means are estimated on
SHAPE_CHUNK = 5_000     # shapes aligned, scored or predicted at a time (~0.4 GB of work at any N)


def robust_z(x: np.ndarray, ref: np.ndarray | None = None) -> np.ndarray:
    """(x - median) / (1.4826 * MAD), the statistics taken over `ref` (default x)."""
    ref = x if ref is None else ref
    med = np.median(ref)
    mad = 1.4826 * np.median(np.abs(ref - med))
    return (x - med) / max(mad, 1e-12)


def tail_threshold(z: np.ndarray, expected_false: float = EXPECTED_FALSE, q: float = TAIL_QUANTILE) -> float:
    """The score above which a stage's clean rows would leave `expected_false` of themselves, from the
    scores themselves: the upper tail of the clean bulk as an exponential through the median and the
    q-quantile (whatever lies above q, where the bad rows are, takes no part in the fit), extrapolated
    to len(z) rows. A stage whose clean scores spread wider (another camera, a weaker model) gets a
    higher threshold; a tight one a lower. Grows with log(len(z)), as the largest clean score does."""
    med, hi = np.quantile(z, [0.5, q])
    scale = (hi - med) / np.log(0.5 / (1 - q))
    return float(max(MIN_THRESHOLD, hi + scale * np.log(max(len(z) * (1 - q) / expected_false, 1.0))))


def centroid_size(shapes: np.ndarray) -> np.ndarray:
    """Root mean square distance of the points from their centroid: (N, P, 2) -> (N,)."""
    c = shapes - shapes.mean(1, keepdims=True)
    return np.sqrt((c ** 2).sum(-1).mean(-1))


def _complex(shapes: np.ndarray, rows: np.ndarray | None = None, chunk: int = SHAPE_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Shapes (N, P, 2) (or those of `rows`) centred and scaled to unit centroid size, as complex
    numbers (N, P) complex64, and their centroid sizes (N,). Worked in float32, `chunk` shapes at a
    time: beyond the result, the memory of one chunk (float64 copies of 20,000 contest shapes took 1.3 GB)."""
    rows = np.arange(len(shapes)) if rows is None else rows
    z = np.empty((len(rows), shapes.shape[1]), np.complex64)
    size = np.empty(len(rows))
    for i in range(0, len(rows), chunk):
        x = shapes[rows[i:i + chunk]].astype(np.float32)
        x -= x.mean(1, keepdims=True)
        s = np.sqrt((x ** 2).sum(-1).mean(-1))
        x /= np.maximum(s, 1e-9)[:, None, None]
        z.real[i:i + chunk], z.imag[i:i + chunk], size[i:i + chunk] = x[..., 0], x[..., 1], s
    return z, size


def _rotate_onto(z: np.ndarray, mean: np.ndarray) -> None:
    """Rotates each shape (row of z, in place) onto the mean: the best rotation is the phase of
    sum(conj(z) * mean), the conjugate of z @ conj(mean)."""
    rot = (z @ mean.conj()).conj()
    z *= (rot / np.maximum(np.abs(rot), 1e-12))[:, None]


def procrustes_means(shapes: np.ndarray, iterations: int = 3, sample: int = MEAN_SAMPLE, seed: int = 0,
                     chunk: int = SHAPE_CHUNK) -> list[np.ndarray]:
    """The means of generalized Procrustes, one per iteration (complex, unit RMS), estimated on at
    most `sample` shapes (all of them when there are fewer): memory bounded at any N."""
    rows = np.arange(len(shapes)) if len(shapes) <= sample else \
        np.sort(np.random.default_rng(seed).choice(len(shapes), sample, replace=False))
    z, size = _complex(shapes, rows, chunk)
    means = [z[np.argsort(size)[len(z) // 2]].copy()]     # start from a typical shape
    for _ in range(iterations):
        _rotate_onto(z, means[-1])
        mean = z.mean(0)
        means.append(mean / np.sqrt((np.abs(mean) ** 2).mean()))
    return means


def procrustes_align(shapes: np.ndarray, means: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Align each shape to the mean by translation, scale and rotation (no reflection, so a
    mirrored-without-reindexing shape stays wrong), as generalized Procrustes does, through the
    same sequence of means. Returns (aligned (N, P, 2), mean (P, 2))."""
    means = procrustes_means(shapes) if means is None else means
    z, _ = _complex(shapes)
    for mean in means[:-1]:
        _rotate_onto(z, mean)
    return np.stack([z.real, z.imag], -1), np.stack([means[-1].real, means[-1].imag], -1)


def shape_scores(landmarks: np.ndarray, rank: int = 12, fit_max: int = 3000, seed: int = 0,
                 chunk: int = SHAPE_CHUNK, mean_sample: int = MEAN_SAMPLE) -> np.ndarray:
    """Mean per-point residual (in units of face size) after Procrustes and a rank-`rank` PCA.

    The PCA is fitted robustly: a few wild shapes would otherwise each take a component and
    be "explained". Inliers start as the shapes closest to the mean shape, then the basis is
    refitted twice on the shapes it explains within median + 3 MAD. Shapes are aligned and
    scored `chunk` at a time, so memory does not grow with the number of shapes beyond the scores."""
    means = procrustes_means(landmarks, sample=mean_sample, chunk=chunk)

    def flat(rows):
        aligned, mean = procrustes_align(landmarks[rows], means)
        return (aligned - mean).reshape(len(aligned), -1).astype(np.float32)

    def residual(x, basis=None):
        r = x if basis is None else x - (x @ basis.T) @ basis
        return np.sqrt((r.reshape(len(x), -1, 2) ** 2).sum(-1)).mean(-1)

    def pca(rows):
        c = rows - rows.mean(0)
        _, vecs = np.linalg.eigh((c.T @ c).astype(np.float64))   # 1942^2 eigh: much cheaper than an SVD of N rows
        return vecs[:, -rank:].T.astype(np.float32)

    rng = np.random.default_rng(seed)
    fit = flat(rng.choice(len(landmarks), min(fit_max, len(landmarks)), replace=False))
    r = residual(fit)
    keep = r <= np.quantile(r, 0.8)
    for _ in range(2):
        basis = pca(fit[keep])
        r = residual(fit, basis)
        keep = robust_z(r) <= 3
    return np.concatenate([residual(flat(np.arange(i, min(i + chunk, len(landmarks)))), basis)
                           for i in range(0, len(landmarks), chunk)])


def geometry_reasons(landmarks: np.ndarray, chunk: int = SHAPE_CHUNK) -> np.ndarray:
    """A failed rule per shape ('' where all hold), in the face's own frame so any pose passes."""
    if len(landmarks) > chunk:
        return np.concatenate([geometry_reasons(landmarks[i:i + chunk], chunk) for i in range(0, len(landmarks), chunk)])
    lm = landmarks.astype(np.float64)
    g = {k: lm[:, a:b].mean(1) for k, (a, b) in GROUPS.items()}
    chin = (lm[:, 63] + lm[:, 127]) / 2
    up = lm[:, 200] - chin                          # chin -> forehead centre
    size = np.maximum(centroid_size(lm), 1e-9)

    def cross(u, v):
        return u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]
    # In image coordinates (y down) side b lies at positive cross(up, b - a) on an unmirrored face.
    sides = np.stack([cross(up, g[f"{p}_b"] - g[f"{p}_a"]) for p in ("jaw", "brow", "eyelid", "nose")], 1)
    out = np.full(len(lm), "", dtype=object)
    out[(sides < 0).sum(1) >= 3] = "left/right swapped"
    unit_up = up / np.maximum(np.linalg.norm(up, axis=1, keepdims=True), 1e-9)

    def height(a):       # position along the face's up axis
        return (g[a] * unit_up).sum(1)
    inside_out = (height("lip_upper_outer") < height("lip_upper_inner") - 0.02 * size) | \
                 (height("lip_lower_outer") > height("lip_lower_inner") + 0.02 * size) | \
                 (height("lip_upper_outer") < height("lip_lower_outer"))
    out[(out == "") & inside_out] = "lips inside-out"
    spread = np.stack([centroid_size(lm[:, a:b]) for k, (a, b) in GROUPS.items() if b - a > 30], 1) / size[:, None]
    out[(out == "") & (spread.min(1) < 0.01)] = "collapsed contour"
    return out


def outside_fraction(landmarks: np.ndarray, sizes: np.ndarray, margin: float = 0.1,
                     chunk: int = SHAPE_CHUNK) -> np.ndarray:
    """Fraction of points more than margin * image size outside the image (slightly outside is normal)."""
    out = np.empty(len(landmarks))
    for i in range(0, len(landmarks), chunk):
        lm, size = landmarks[i:i + chunk], sizes[i:i + chunk, None, :]
        out[i:i + chunk] = ((lm < -margin * size) | (lm > size * (1 + margin))).any(-1).mean(-1)
    return out


EDA_FOLDS = 4           # out-of-fold models; their recipe is config.RECIPES["eda"]


def out_of_fold_disagreement(data_dir: Path | str, folds: int = EDA_FOLDS, epochs: int = RECIPES["eda"]["epochs"],
                             crop_size: int = RECIPES["eda"]["crop_size"], arch: str = "resnet18",
                             augment: str = RECIPES["eda"]["augment"],
                             device: str = "auto", cache_dir: Path | str | None = None, seed: int = 0,
                             max_train_steps: int | None = None, progress: bool = True,
                             fold_dir: Path | str | None = None) -> dict[str, np.ndarray]:
    """disagreement() of every label with an out-of-fold prediction: each row is predicted by a model
    trained on the other folds (the whole face kept in view: resize mode pad), SHAPE_CHUNK rows at a
    time, so no N x 971 x 2 array of labels or predictions is held.

    With `fold_dir` (the EDA notebook's folder on Drive), each finished fold's scores are saved there
    and a rerun (after a disconnect) takes the folds already done instead of training them again;
    a fold saved under other settings or other data is trained again, and that is said."""
    if folds < 2:
        raise ValueError(f"folds: out-of-fold predictions need at least 2 folds, got {folds}")
    dev = resolve_device(device)
    cache = eda_cache(data_dir, crop_size, cache_dir, progress)
    targets = cache.targets()
    n = len(cache)
    fold_of = np.random.default_rng(seed).permutation(n) % folds
    out: dict[str, np.ndarray] = {}
    key = json.dumps({"folds": folds, "epochs": epochs, "crop_size": crop_size, "arch": arch, "augment": augment,
                      "seed": seed, "max_train_steps": max_train_steps, "rows": n, "data": fingerprint(data_dir)},
                     sort_keys=True)
    for f in bar(range(folds), desc="out-of-fold models", unit="fold", disable=not progress):
        saved = Path(fold_dir) / f"fold{f + 1}of{folds}.npz" if fold_dir else None
        if saved is not None and (done := _saved_fold(saved, key)) is not None:
            rows = done.pop("rows")
            for name, v in done.items():
                out.setdefault(name, np.zeros(n))[rows] = v
            print(f"fold {f + 1} of {folds}: taken from {saved}")
            continue
        # The eda recipe (L1: the few bad labels in each fold pull the model little); the head starts
        # at the median shape for the same reason. The LR drops before the last epoch at any length.
        cfg = make_config({"recipe": "eda", "arch": arch, "crop_size": crop_size, "epochs": epochs,
                           "drop_at": [max(1, epochs - 1)], "augment": augment, "seed": seed + f,
                           "max_train_steps": max_train_steps})
        train_idx = np.flatnonzero(fold_of != f)
        sample = np.sort(np.random.default_rng(f).permutation(train_idx)[:MEDIAN_SAMPLE])   # bounded memory
        model, _ = train_model(cfg, cache, train_idx, device=dev, mean_shape=np.median(targets[sample], 0),
                               progress=progress)
        held = np.flatnonzero(fold_of == f)
        for i in range(0, len(held), SHAPE_CHUNK):
            loader = BatchLoader(cache.images, None, held[i:i + SHAPE_CHUNK], 128, False, device=dev)
            p, rows = predict_normalized(model, loader, autocast_dtype(dev, cfg["amp"]), flip_tta=True)
            rows = rows.numpy()
            for name, v in disagreement(targets[rows], p.cpu().numpy()).items():
                out.setdefault(name, np.zeros(n))[rows] = v
        if saved is not None:
            saved.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(saved) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, key=np.array(key), rows=held, **{name: v[held] for name, v in out.items()})
    return out


def _saved_fold(path: Path, key: str) -> dict[str, np.ndarray] | None:
    """A fold's saved scores (rows and one array per disagreement) when `path` holds them for `key`."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            if str(z["key"]) == key:
                return {name: z[name] for name in z.files if name != "key"}
            why = "saved under other settings or other data"
    except (OSError, ValueError, KeyError, EOFError) as e:
        why = f"unreadable ({type(e).__name__})"
    print(f"{path}: {why}; training this fold again")
    return None


def disagreement(labels: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """How a label sits relative to the face the model sees, in units of the predicted face size:
    the offset between their centroids (shifted labels, another image's labels) and |log| of
    their size ratio (rescaled labels). Rotation is left out on purpose: a quick model
    under-rotates strongly tilted clean faces, and no planted kind needs it."""
    size = np.maximum(centroid_size(pred), 1e-9)
    return {"label shifted off the face": np.linalg.norm(labels.mean(1) - pred.mean(1), axis=1) / size,
            "label scale differs from the face": np.abs(np.log(np.maximum(centroid_size(labels), 1e-9) / size))}


def eda_cache(data_dir: Path | str, crop_size: int = RECIPES["eda"]["crop_size"], cache_dir: Path | str | None = None,
              progress: bool = True, src: Split | None = None) -> Cache:
    """The out-of-fold models' cache (the EDA recipe's resize mode: the whole face in view)."""
    return build_cache(data_dir, "train", cache_root(data_dir, cache_dir), crop_size, RECIPES["eda"]["resize_mode"],
                       progress=progress, src=src)


RULE_STAGES = ("points far outside the image", "group geometry")   # pass/fail: GEOMETRY_Z or 0


def score_annotations(data_dir: Path | str, use_model: bool = True, k: float | None = None, progress: bool = True,
                      **model_kwargs) -> pd.DataFrame:
    """Every training row with score, reason, rule (the reason is a failed pass/fail rule), its line in
    landmarks.csv, flagged and each stage's robust z (z_<stage>); worst first. score is the row's
    largest z as a multiple of its stage's threshold, so flagged is score > 1. The thresholds: with k
    None, each scored stage's tail_threshold of its own z's; with a number k, k for every stage.
    df.attrs["thresholds"] holds them, stage by stage, and df.attrs["rules"] the pass/fail stages.
    landmarks.csv is parsed once: with the model stage, its cache is built (or found) from this parse
    first, and the image sizes come from it instead of a pass over the headers."""
    split = load_split(data_dir, "train")
    csv, names = split.csv, split.names
    if use_model:
        sizes = eda_cache(data_dir, model_kwargs.get("crop_size", RECIPES["eda"]["crop_size"]),
                          model_kwargs.get("cache_dir"), progress, src=split).sizes
    else:
        sizes = image_sizes([str(split.image_path(i)) for i in range(len(names))], desc="image headers")
    z = {"points far outside the image": np.where(outside_fraction(split.landmarks, sizes) > 0.05, GEOMETRY_Z, 0.0),
         "implausible shape": robust_z(shape_scores(split.landmarks))}
    geometry = geometry_reasons(split.landmarks)
    z["group geometry"] = np.where(geometry != "", GEOMETRY_Z, 0.0)
    del split   # the model stage reads its labels from the cache: the CSV's labels (1.5 GB in 2020) go first
    if use_model:
        z |= {name: robust_z(v) for name, v in out_of_fold_disagreement(data_dir, progress=progress,
                                                                        **model_kwargs).items()}
    stages = list(z)
    stacked = np.stack([z[n] for n in stages], 1)
    bad = np.flatnonzero(~np.isfinite(stacked).all(1))
    if len(bad):   # a NaN score would silently rank as clean
        raise DataError(f"{csv}:{bad[0] + 2}: annotation score is not a number "
                        f"({len(bad)} row(s)); the out-of-fold models diverged or a label is degenerate")
    # A failed rule (z = GEOMETRY_Z) is a certainty, not a tail: its threshold of 1 ranks it first and
    # names it as the reason (a mirrored shape is also an implausible one).
    thresholds = {n: float(k) if k is not None else 1.0 if n in RULE_STAGES else tail_threshold(z[n])
                  for n in stages}
    ratio = stacked / np.array([thresholds[n] for n in stages])
    best = ratio.argmax(1)
    reason = np.array(stages, dtype=object)[best]
    reason = np.where(reason == "group geometry", geometry, reason)
    df = pd.DataFrame({"file_name": names, "score": ratio.max(1), "reason": reason,
                       "rule": np.isin(np.array(stages)[best], RULE_STAGES) & (ratio.max(1) > 0),
                       "line": np.arange(2, len(names) + 2)})
    for n in stages:
        df["z_" + n.replace(" ", "_").replace("/", "_")] = z[n]
    df["flagged"] = df["score"] > 1
    df = df.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    df.attrs["thresholds"], df.attrs["rules"] = thresholds, RULE_STAGES
    return df


def labelled_images(data_dir: Path | str, rows: pd.DataFrame) -> tuple[list[Path], list[np.ndarray]]:
    """Image paths and labels of some scored rows (score_annotations' file_name and line), for a
    gallery: only those lines of landmarks.csv are read."""
    train = Path(data_dir) / "train"
    points = read_landmark_lines(train / SPLIT_CSV["train"], rows["line"])
    return [train / "images" / name for name in rows["file_name"]], list(points)


def caption(row) -> str:
    """A scored row in words, for a figure's title: its reason, then how far past its stage's threshold
    (a rule that failed has no such measure: it is said to have failed)."""
    return f"{row.reason}\n" + ("failed rule" if row.rule else f"{row.score:.1f}× its threshold")


def summary(df: pd.DataFrame) -> str:
    f = df[df["flagged"]]
    by = ", ".join(f"{r}: {c}" for r, c in f["reason"].value_counts().items())
    limits = ", ".join(f"{n} {t:.1f}" for n, t in df.attrs.get("thresholds", {}).items() if n not in RULE_STAGES)
    return (f"{len(f)} of {len(df)} annotations flagged" + (f" ({by})" if len(f) else "")
            + (f"; robust z thresholds: {limits}" if limits else ""))


def precision_recall(scores: pd.DataFrame, planted: pd.DataFrame) -> pd.DataFrame:
    """Precision and recall of the flags against known planted corruptions (synthetic set).

    Per kind, recall is that kind's caught fraction; precision counts every false flag against
    each kind (TP_kind / (TP_kind + all false positives)), the strict reading."""
    kind = dict(zip(planted["file_name"], planted["kind"]))
    flagged = scores[scores["flagged"]]
    false_pos = int((~flagged["file_name"].isin(kind)).sum())
    rows = []
    for k in ["all"] + sorted(set(kind.values())):
        names = [n for n, v in kind.items() if k == "all" or v == k]
        tp = int(flagged["file_name"].isin(names).sum())
        rows.append({"kind": k, "planted": len(names), "caught": tp, "recall": tp / max(1, len(names)),
                     "false_flags": false_pos, "precision": tp / max(1, tp + false_pos)})
    return pd.DataFrame(rows)


@cli
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m landmarklib.eda", description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, type=Path)
    p.add_argument("--out", type=Path, default=Path("bad_annotations.csv"), help="the scores, worst first")
    p.add_argument("--no-model", action="store_true", help="shape-only stage (seconds, no training)")
    p.add_argument("--k", type=float, default=None, help="flag when a robust z-score exceeds k, at every stage "
                   "(default: each stage's threshold from its own score distribution)")
    p.add_argument("--folds", type=int, default=EDA_FOLDS, help="out-of-fold models (at least 2)")
    p.add_argument("--epochs", type=int, default=RECIPES["eda"]["epochs"], help="epochs per out-of-fold model")
    p.add_argument("--crop-size", type=int, default=RECIPES["eda"]["crop_size"], help="their input side in pixels")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--cache-dir", default=None, help="decode cache folder (default <data-dir>/cache)")
    p.add_argument("--fold-dir", default=None, help="save each finished fold here; a rerun takes them up")
    a = p.parse_args(argv)
    check_output(a.out)
    kw = {} if a.no_model else {"folds": a.folds, "epochs": a.epochs, "crop_size": a.crop_size,
                                "device": a.device, "cache_dir": a.cache_dir, "fold_dir": a.fold_dir}
    df = score_annotations(a.data_dir, not a.no_model, a.k, **kw)
    with atomic_path(a.out) as tmp:
        df.to_csv(tmp, index=False)
    print(f"{summary(df)}; wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

