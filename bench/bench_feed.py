"""The training feed from a cold cache: a 2020-sized train cache (393,930 rows at 128 px: 19.4 GB of
images, 1.5 GB of int16 labels) read by BatchLoader with its pages evicted first, as on a free Colab
runtime (12.7 GB of RAM) where it never fits in memory. Side by side in one run, in images/s and MB/s:

  - a shuffled epoch in random order (the default: every row a random read, asked for a few batches
    ahead) and in block order (windows of 16 random runs of consecutive rows, shuffled within);
  - validation, in file order;
  - the same shuffled epochs behind a consumer that takes CONSUMER images/s (a T4 on resnext50 at
    128 px, by the README's estimate): the share of its time spent waiting for a batch.

    python bench/bench_feed.py [--root runs/bench_feed] [--images 60000] [--consumer 600]

The cache is made once under --root (random pixels: what is read, not what it shows, is measured) and
reused. Each measurement starts cold: the files' pages are dropped (posix_fadvise DONTNEED) and the
memmaps opened afresh. --images bounds each shuffled pass (a whole epoch in random order can take
many minutes from disk); validation reads --images rows too.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import drop_pages  # noqa: E402
from landmarklib.cache import Targets  # noqa: E402
from landmarklib.loader import BatchLoader  # noqa: E402

FULL_TRAIN = 393_930
CROP = 128


def make_cache(root: Path, n: int) -> None:
    """images.npy (n, 128, 128, 3) uint8, landmarks.npy (n, 971, 2) int16, affine.npy (n, 4): once."""
    if (root / "DONE").is_file():
        return
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    block = rng.integers(0, 256, (1024, CROP, CROP, 3), dtype=np.uint8)
    images = np.lib.format.open_memmap(root / "images.npy", "w+", np.uint8, (n, CROP, CROP, 3))
    for i in range(0, n, len(block)):
        images[i:i + len(block)] = block[:min(len(block), n - i)]
    images.flush()
    del images
    labels = rng.integers(-22, 1308, (1024, 971, 2)).astype(np.int16)
    lm = np.lib.format.open_memmap(root / "landmarks.npy", "w+", np.int16, (n, 971, 2))
    for i in range(0, n, len(labels)):
        lm[i:i + len(labels)] = labels[:min(len(labels), n - i)]
    lm.flush()
    del lm
    w = rng.integers(150, 1400, n)
    np.save(root / "affine.npy", np.stack([CROP / w, CROP / w, np.zeros(n), np.zeros(n)], 1))
    os.sync()
    (root / "DONE").write_text("")


def cold(root: Path) -> tuple[np.ndarray, Targets]:
    """The cache's pages dropped from memory, then opened afresh."""
    drop_pages(root / name for name in ("images.npy", "landmarks.npy"))
    images = np.load(root / "images.npy", mmap_mode="r")
    return images, Targets(np.load(root / "landmarks.npy", mmap_mode="r"), np.load(root / "affine.npy"), CROP)


def feed(root: Path, rows: np.ndarray, shuffle: bool, order: str, images_cap: int, batch: int,
         consumer: float | None = None) -> tuple[float, float, float]:
    """(images/s, MB/s, share of the consumer's time spent waiting) over at most images_cap images."""
    images, targets = cold(root)
    loader = BatchLoader(images, targets, rows, batch, shuffle=shuffle, seed=0, order=order)
    row_mb = (images[:1].nbytes + targets.landmarks[:1].nbytes) / 2**20
    n, waited = 0, 0.0
    start = time.perf_counter()
    it = iter(loader)
    while n < images_cap:
        t = time.perf_counter()
        try:
            imgs, tg, _ = next(it)
        except StopIteration:
            break
        waited += time.perf_counter() - t
        n += len(imgs)
        if consumer:
            time.sleep(len(imgs) / consumer)   # the GPU's step, while the loader's thread reads ahead
    seconds = time.perf_counter() - start
    del it, loader, images, targets
    return n / seconds, n * row_mb / seconds, waited / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=Path("runs/bench_feed"))
    p.add_argument("--rows", type=int, default=FULL_TRAIN, help="cache rows (the 2020 train set: 393,930)")
    p.add_argument("--images", type=int, default=60_000, help="images per measured pass")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--consumer", type=float, default=600.0, help="images/s the simulated GPU takes")
    a = p.parse_args()
    t = time.perf_counter()
    make_cache(a.root, a.rows)
    size = sum((a.root / f).stat().st_size for f in ("images.npy", "landmarks.npy")) / 2**30
    print(f"cache: {a.rows} rows at {CROP} px, {size:.1f} GiB ({time.perf_counter() - t:.0f} s to make or find)")
    n_train = int(round(a.rows * 0.8))
    train_rows, val_rows = np.arange(n_train), np.arange(n_train, a.rows)
    print(f"| pass (cold, {a.images:,} images, batch {a.batch}) | images/s | MB/s |")
    print("| --- | --- | --- |")
    results = {}
    for label, rows, shuffle, order in [("train, random order", train_rows, True, "random"),
                                         ("train, block order", train_rows, True, "blocks"),
                                         ("validation, file order", val_rows, False, "blocks")]:
        rate, mbs, _ = feed(a.root, rows, shuffle, order, a.images, a.batch)
        results[label] = rate
        print(f"| {label} | {rate:,.0f} | {mbs:,.0f} |")
    print(f"block / random: {results['train, block order'] / results['train, random order']:.1f}x")
    cap = int(a.consumer * 60)   # a minute of the consumer's time
    print(f"\n| behind a consumer of {a.consumer:.0f} images/s (cold, {cap:,} images) | data wait |")
    print("| --- | --- |")
    for order in ("random", "blocks"):
        _, _, wait = feed(a.root, train_rows, True, order, cap, a.batch, a.consumer)
        print(f"| train, {order} order | {100 * wait:.1f} % |")
    print(f"\nmachine: {os.cpu_count()} cores; command: python bench/bench_feed.py --root {a.root} --rows {a.rows} "
          f"--images {a.images} --batch {a.batch} --consumer {a.consumer:g}")


if __name__ == "__main__":
    main()
