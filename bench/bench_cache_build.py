"""Decode-cache build time per image from 10,000 rows to the contest's 393,930, and where it goes.

    python bench/bench_cache_build.py --root /tmp/bench_scale              # 10k and full, both cadences
    python bench/bench_cache_build.py --root /tmp/bench_scale --scales 10000 40000

Uses bench_scale.py's synthetic contest-size set (made once under --root, shared with it). Each
arm builds the train and test caches (32 px, crop, 2 workers, no progress bar: bench_scale's cache
stage) in a fresh process, after starting the worker pool's fork server once, which is timed apart:
it is a constant per process (about 3 s), and bench_scale's per-image figure includes it. A first
build at each scale (not compared) brings the images and CSVs into the page cache. The build's
steps are timed by wrapping landmarklib.cache's functions. Two cadences of saving the build's state
(every row's affine, size and done flag), side by side at each scale:
  per chunk   after every 64 images: what a build without a progress bar did before (the cadence
              followed the bar's counter, which a disabled bar never advances)
  per 5 s     cache.SAVE_SECONDS, the default now
and the default once more with the images and CSVs dropped from the page cache first (5 s, cold):
what a build reads from disk when its images are not in memory.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import FULL_TRAIN, make_contest_set, make_prefix_set, test_rows  # noqa: E402
from common import drop_pages  # noqa: E402

STEPS = ["load_split", "_decode", "_save", "label_ranges", "_fingerprint", "file_digest", "check_images_exist"]


def build(data_dir: Path, save_seconds: float, cold: bool) -> dict:
    """In this process: start the fork server, then build train and test; seconds per step."""
    if cold:   # the images' and CSVs' pages: read from disk by the build
        drop_pages(e.path for folder in (data_dir / "train", data_dir / "test")
                   for e in [*os.scandir(folder / "images"), *os.scandir(folder)] if e.is_file())
    from landmarklib import cache
    from landmarklib.workers import process_pool
    took: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    for name in STEPS:
        def timed(*a, _f=getattr(cache, name), _n=name, **k):
            t = time.perf_counter()
            try:
                return _f(*a, **k)
            finally:
                took[_n] += time.perf_counter() - t
                calls[_n] += 1
        setattr(cache, name, functools.wraps(getattr(cache, name))(timed))
    cache.SAVE_SECONDS = save_seconds
    t = time.perf_counter()
    with process_pool(2) as ex:
        list(ex.map(abs, range(2)))
    server = time.perf_counter() - t
    root = Path(tempfile.mkdtemp(dir=data_dir))
    try:
        t = time.perf_counter()
        images = sum(len(cache.build_cache(data_dir, split, root, 32, "crop", workers=2, progress=False))
                     for split in ("train", "test"))
        total = time.perf_counter() - t
    finally:
        shutil.rmtree(root)
    return {"images": images, "total": total, "server": server, "took": dict(took), "saves": calls["_save"] // 3}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=Path("runs/bench_scale"), help="bench_scale.py's --root")
    p.add_argument("--scales", nargs="+", default=["10000", "full"])
    p.add_argument("--arm", nargs=3, help=argparse.SUPPRESS)   # internal: DATA_DIR SAVE_SECONDS COLD, in this process
    a = p.parse_args()
    if a.arm:
        print(json.dumps(build(Path(a.arm[0]), float(a.arm[1]), a.arm[2] == "cold")))
        return 0
    full = a.root / "full"
    make_contest_set(full)
    arms = [("warm-up", 5.0, ""), ("per chunk", 0.0, ""), ("per 5 s", 5.0, ""), ("5 s, cold", 5.0, "cold")]
    print(f"{'rows':>9} {'cadence':<10} {'images/s':>9} {'ms/img':>7} {'saves':>6} {'saving':>8} "
          + " ".join(f"{s.strip('_'):>12}" for s in STEPS if s != "_save") + "  fork server")
    for scale in a.scales:
        n = FULL_TRAIN if scale == "full" else int(scale)
        d = full if n == FULL_TRAIN else a.root / f"n{n}"
        if d != full:
            make_prefix_set(full, d, n)
        for name, seconds, cold in arms:
            out = subprocess.run([sys.executable, __file__, "--arm", str(d), str(seconds), cold], stdout=subprocess.PIPE,
                                 text=True, check=True).stdout   # an arm's errors go to the terminal
            r = json.loads(out.strip().splitlines()[-1])
            if name == "warm-up":   # the first build reads the images and CSVs into the page cache: not compared
                print(f"{n:>9,} warm-up    {r['images'] / r['total']:>9,.0f}", flush=True)
                continue
            ms = 1000 / r["images"]
            print(f"{n:>9,} {name:<10} {r['images'] / r['total']:>9,.0f} {r['total'] * ms:>7.3f} {r['saves']:>6} "
                  f"{r['took'].get('_save', 0) * ms:>5.3f} ms "
                  + " ".join(f"{r['took'].get(s, 0) * ms:>9.3f} ms" for s in STEPS if s != "_save")
                  + f"  {r['server']:.1f} s", flush=True)
    print(f"\n(images = train + test, {test_rows(FULL_TRAIN):,} test rows at full size; each step's time per image; "
          "decode includes the saves made during it)")
    print(f"command: python bench/bench_cache_build.py --root {a.root} --scales {' '.join(a.scales)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
