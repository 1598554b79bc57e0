"""Data benchmarks, side by side in one run on the same files:
  1. landmarks.csv load: landmarklib.data.read_landmarks (pandas C parser) vs a per-line Python loop;
  2. decode-cache build, images/s;
  3. one epoch of feed, images/s: BatchLoader over the cache vs a per-image decode-resize-crop
     DataLoader like the organizers' baseline (2 workers, as on Colab).

    python bench/bench_data.py [--rows 20000] [--images 2000] [--crop-size 128]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: it reads this once

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PerImageDataset  # noqa: E402

from landmarklib.cache import BatchLoader, build_cache  # noqa: E402
from landmarklib.data import LANDMARK_COLUMNS, load_split, read_landmarks  # noqa: E402
from landmarklib.synth import make_dataset  # noqa: E402


def per_line_loop(path: Path):
    """What participants wrote: 14-20 minutes on the 2020 file."""
    names, rows = [], []
    with open(path) as f:
        next(f)
        for line in f:
            parts = line.rstrip("\n").split("\t")
            names.append(parts[0])
            rows.append(np.array([float(v) for v in parts[1:]], dtype=np.float32).reshape(-1, 2))
    return names, np.stack(rows)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--crop-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lmbench_"))
    try:
        # 1. CSV load
        csv = tmp / "landmarks.csv"
        rng = np.random.default_rng(0)
        with open(csv, "w") as f:
            f.write("\t".join(LANDMARK_COLUMNS) + "\n")
            block = rng.integers(-20, 1300, (1000, 1942))
            for i in range(a.rows):
                f.write(f"{i:032x}.jpg\t" + "\t".join(map(str, block[i % 1000].tolist())) + "\n")
        t = time.perf_counter(); n1, l1 = read_landmarks(csv); t_pd = time.perf_counter() - t
        t = time.perf_counter(); n2, l2 = per_line_loop(csv); t_loop = time.perf_counter() - t
        assert np.array_equal(l1, l2) and list(n1) == n2
        mb = csv.stat().st_size / 2**20
        print(f"landmarks.csv {a.rows} rows ({mb:.0f} MB): read_landmarks {t_pd:.2f} s, per-line loop {t_loop:.2f} s "
              f"-> {t_loop / t_pd:.1f}x")
        # 2. cache build
        data = make_dataset(tmp / "data", a.images, 0, seed=0, workers=a.workers)
        t = time.perf_counter()
        cache = build_cache(data, "train", tmp / "cache", a.crop_size, "crop", workers=a.workers, progress=False)
        t_build = time.perf_counter() - t
        print(f"cache build: {a.images} images at {a.crop_size} px in {t_build:.2f} s -> {a.images / t_build:.0f} images/s "
              f"({a.workers} processes)")
        # 3. epoch feed
        targets = cache.targets()
        t = time.perf_counter()
        n = 0
        for imgs, tg, _ in BatchLoader(cache.images, targets, np.arange(len(cache)), 64, shuffle=True):
            x = imgs.permute(0, 3, 1, 2).float()   # what the training step does first
            n += len(x)
        t_cache = time.perf_counter() - t
        split = load_split(data, "train")
        loader = DataLoader(PerImageDataset(split, np.arange(len(split.names)), a.crop_size), batch_size=64, shuffle=True,
                            num_workers=a.workers)
        t = time.perf_counter()
        m = sum(len(x) for x, _, _ in loader)
        t_per = time.perf_counter() - t
        assert n == m == a.images
        print(f"epoch feed: cache BatchLoader {n / t_cache:.0f} images/s, per-image DataLoader ({a.workers} workers) "
              f"{m / t_per:.0f} images/s -> {t_per / t_cache:.1f}x")
        print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}; command: python bench/bench_data.py "
              f"--rows {a.rows} --images {a.images} --crop-size {a.crop_size} --workers {a.workers}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
