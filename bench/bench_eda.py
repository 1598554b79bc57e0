"""Bad-annotation detector, measured on planted corruptions.

    python bench/bench_eda.py [--images 2000] [--bad-fraction 0.03] [--shapes 64000]

Prints precision and recall of the flags, overall and per corruption kind, for the
shape-only stage and for both stages, with their wall times; then the shape-only stage's
time on --shapes synthetic shapes (the 2021 data has 64,000).
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
from landmarklib.synth import face_points, make_dataset, sample_face  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--bad-fraction", type=float, default=0.03)
    p.add_argument("--shapes", type=int, default=64000)
    p.add_argument("--k", type=float, default=eda.Z_DEFAULT)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lmbench_eda_"))
    pd.set_option("display.width", 120)
    try:
        data = make_dataset(tmp / "data", a.images, 0, seed=0, bad_fraction=a.bad_fraction)
        planted = pd.read_csv(data / "train" / "planted_bad.csv")
        for use_model in (False, True):
            t = time.perf_counter()
            scores = eda.score_annotations(data, use_model, a.k, progress=False)
            seconds = time.perf_counter() - t
            print(f"\n{'shape + image stages' if use_model else 'shape-only stage'}: {a.images} images, "
                  f"{len(planted)} planted, k = {a.k:g}, {seconds:.0f} s on {os.cpu_count()} cores; {eda.summary(scores)}")
            print(eda.precision_recall(scores, planted).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        rng = np.random.default_rng(1)
        base = np.stack([face_points(sample_face(rng)) for _ in range(2000)])
        shapes = (base[rng.integers(0, 2000, a.shapes)] + rng.normal(0, 0.5, (a.shapes, 971, 2))).astype(np.float32)
        t = time.perf_counter()
        eda.shape_scores(shapes)
        eda.geometry_reasons(shapes)
        print(f"\nshape-only scoring of {a.shapes} shapes: {time.perf_counter() - t:.1f} s")
        print(f"command: python bench/bench_eda.py --images {a.images} --bad-fraction {a.bad_fraction} "
              f"--shapes {a.shapes} --k {a.k:g}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
