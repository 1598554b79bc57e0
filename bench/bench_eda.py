"""Bad-annotation detector, measured on planted corruptions.

    python bench/bench_eda.py [--images 2000] [--bad-fraction 0.03] [--shapes 64000] [--style demo] [--k K]

Prints precision and recall of the flags, overall and per corruption kind, for the
shape-only stage and for both stages, with their wall times and each stage's threshold
(set from the data's own scores, or --k for all); then the shape-only stage's time on --shapes
synthetic shapes (the 2021 data has 64,000; --shapes 0 skips it). --style renders the images
in another synth style (alt, small: see synth.STYLES).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from landmarklib import eda  # noqa: E402
from landmarklib.synth import STYLES, face_points, make_dataset, sample_face  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--bad-fraction", type=float, default=0.03)
    p.add_argument("--shapes", type=int, default=64000)
    p.add_argument("--k", type=float, default=None, help="one threshold for every stage (default: per stage, "
                   "from the data)")
    p.add_argument("--style", choices=tuple(STYLES), default="demo")
    p.add_argument("--no-shape-only", action="store_true", help="leave out the shape-only run")
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lmbench_eda_"))
    pd.set_option("display.width", 120)
    try:
        data = make_dataset(tmp / "data", a.images, 0, seed=0, bad_fraction=a.bad_fraction, style=a.style)
        planted = pd.read_csv(data / "train" / "planted_bad.csv")
        for use_model in (True,) if a.no_shape_only else (False, True):
            t = time.perf_counter()
            scores = eda.score_annotations(data, use_model, a.k, progress=False)
            seconds = time.perf_counter() - t
            print(f"\n{'shape + image stages' if use_model else 'shape-only stage'}: {a.images} images ({a.style} "
                  f"style), {len(planted)} planted, {seconds:.0f} s on {os.cpu_count()} cores; {eda.summary(scores)}")
            print(eda.precision_recall(scores, planted).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
            if a.k is None:   # side by side: the old fixed threshold on the same scores
                z = scores[[c for c in scores if c.startswith("z_")]].to_numpy()
                fixed = scores.assign(flagged=(z > eda.Z_DEFAULT).any(1))
                print(f"the same scores, one threshold k = {eda.Z_DEFAULT:g} for every stage (the old default): "
                      f"{int(fixed['flagged'].sum())} flagged")
                print(eda.precision_recall(fixed, planted).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        if not a.shapes:
            print("command: python bench/bench_eda.py " + " ".join(sys.argv[1:]))
            return
        rng = np.random.default_rng(1)
        base = np.stack([face_points(sample_face(rng)) for _ in range(2000)])
        shapes = (base[rng.integers(0, 2000, a.shapes)] + rng.normal(0, 0.5, (a.shapes, 971, 2))).astype(np.float32)
        t = time.perf_counter()
        eda.shape_scores(shapes)
        eda.geometry_reasons(shapes)
        print(f"\nshape-only scoring of {a.shapes} shapes: {time.perf_counter() - t:.1f} s")
        print("command: python bench/bench_eda.py " + " ".join(sys.argv[1:]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
