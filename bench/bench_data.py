"""Data benchmarks, side by side in one run on the same files:
  1. landmarks.csv load: landmarklib.csvfiles.read_landmarks (pandas C parser) vs a per-line Python loop;
  2. decode-cache build, images/s, with each start method of its worker processes (forkserver,
     the default, against fork and spawn);
  3. one epoch of feed, images/s: BatchLoader over the cache vs a per-image decode-resize-crop
     DataLoader like the organizers' baseline (2 workers, as on Colab);
  4. the data's identity: the SHA-256 of a contest-sized landmarks.csv, from disk and from memory.

    python bench/bench_data.py [--rows 20000] [--images 2000] [--crop-size 128] [--hash-mb 3050]
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

from landmarklib.cache import build_cache  # noqa: E402
from landmarklib.loader import BatchLoader  # noqa: E402
import landmarklib.data as data_mod  # noqa: E402
from landmarklib.csvfiles import LANDMARK_COLUMNS, read_landmarks  # noqa: E402
from landmarklib.data import file_digest, load_split  # noqa: E402
from landmarklib.synth import make_dataset  # noqa: E402
from landmarklib.workers import START_METHODS  # noqa: E402


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
    p.add_argument("--hash-mb", type=int, default=3050, help="size of the CSV hashed (the 2020 file: 3.0 GiB)")
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
        # 2. cache build, with each start method of the worker processes (landmarklib.workers), in turn,
        # twice (best of two: the machine is noisy); a new cache root each time, so each build is whole.
        data = make_dataset(tmp / "data", a.images, 0, seed=0, workers=a.workers)
        builds: dict[str, list[float]] = {m: [] for m in START_METHODS}
        for attempt in range(2):
            for method in START_METHODS:
                os.environ["LANDMARKLIB_START_METHOD"] = method
                root = tmp / f"cache_{method}_{attempt}"
                t = time.perf_counter()
                cache = build_cache(data, "train", root, a.crop_size, "crop", workers=a.workers, progress=False)
                builds[method].append(time.perf_counter() - t)
                if (method, attempt) != (START_METHODS[0], 1):
                    shutil.rmtree(root)
        os.environ.pop("LANDMARKLIB_START_METHOD")
        cache = build_cache(data, "train", tmp / f"cache_{START_METHODS[0]}_1", a.crop_size, "crop", progress=False)
        best = {m: min(ts) for m, ts in builds.items()}
        print(f"cache build: {a.images} images at {a.crop_size} px, {a.workers} processes, best of 2: " + ", ".join(
            f"{m} {best[m]:.2f} s ({a.images / best[m]:.0f} images/s, {best[m] / best['fork']:.2f}x fork)"
            for m in START_METHODS))
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
        # 4. data identity: the SHA-256 of a landmarks.csv of the contest's size, from disk and from memory
        big = tmp / "big.csv"
        with open(big, "wb") as f:
            text = csv.read_bytes()
            for _ in range(-(-a.hash_mb * 2**20 // len(text))):
                f.write(text)
            os.fsync(f.fileno())
        size = big.stat().st_size
        with open(big, "rb") as f:   # out of the page cache: read from disk, as on a fresh runtime
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        t = time.perf_counter(); file_digest(big); t_cold = time.perf_counter() - t
        data_mod._digests.clear()
        t = time.perf_counter(); file_digest(big); t_warm = time.perf_counter() - t
        print(f"data identity: SHA-256 of a {size / 2**30:.2f} GiB landmarks.csv in {t_cold:.1f} s from disk "
              f"({size / 2**20 / t_cold:.0f} MB/s), {t_warm:.1f} s from the page cache ({size / 2**20 / t_warm:.0f} MB/s)")
        print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}; command: python bench/bench_data.py "
              f"--rows {a.rows} --images {a.images} --crop-size {a.crop_size} --workers {a.workers} --hash-mb {a.hash_mb}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
