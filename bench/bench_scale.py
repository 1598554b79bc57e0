"""Contest-scale rehearsal: every stage of the suite on 393,930 + 99,819 synthetic images.

    python bench/bench_scale.py                                  # 10k, 40k, 160k and the full size
    python bench/bench_scale.py --scales 10000 full --root /tmp/scale

Makes (once, then reuses) a synthetic set with the contest's counts in the exact contest layout
and a realistic spread of image sizes (heights 100 to 1,400 px, most 200 to 320), then runs each
stage the way the notebooks do, each in a fresh process, and prints per stage: wall time, peak
resident anonymous memory, disk written, and per image. A smaller scale is a prefix of the full
set (hard links, no copies), so the rows are the same ones.

Memory is Pss_Anon from /proc/<pid>/smaps_rollup, summed over the stage's process and its
children (worker processes; pages they share after fork are counted once, split between them)
and sampled every 50 ms: the heap, not the page cache of the memory-mapped decode cache (which
the kernel drops under pressure), so it is what a 12.7 GB Colab runtime must actually hold. Per
image figures subtract the "base" stage (the interpreter with torch and landmarklib imported).

The images are POOL distinct renders (demo-set faces at realistic sizes) written under every
file name, so decoding and disk are those of the full set; labels repeat with the pool, which
changes no stage's time or memory. On CPU the training stages are bounded (--steps optimizer
steps per epoch) and run at a small crop (--crop-size 32); validation, prediction and the EDA
predictions still cover every row, so their memory is that of the full set.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from io import BytesIO
from pathlib import Path

import numpy as np

FULL_TRAIN, FULL_TEST = 393_930, 99_819
POOL = 2_000
STAGES = ("base", "csv", "check", "cache", "train", "predict", "submission", "eda_shape", "eda_image")


# ---------------------------------------------------------------- the synthetic contest-size set

def realistic_size(rng: np.random.Generator) -> tuple[int, int]:
    """(width, height): 85 % of heights 200-320 px, 10 % 100-200, 5 % 320-1,400 (log-uniform)."""
    u = rng.uniform()
    h = (rng.uniform(200, 320) if u < 0.85 else rng.uniform(100, 200) if u < 0.95
         else float(np.exp(rng.uniform(np.log(320), np.log(1400)))))
    return int(round(h * rng.uniform(0.75, 1.0))), int(round(h))


def _render_pool_face(i: int) -> tuple[bytes, np.ndarray]:
    from landmarklib import synth
    rng = np.random.default_rng([7, i])
    w, h = realistic_size(rng)
    face = synth.sample_face(rng)
    s = min(w / face["width"], h / face["height"])   # the same face, scaled into the new frame
    face |= {"width": w, "height": h, "scale": face["scale"] * s,
             "centre": (face["centre"][0] * w / face["width"], face["centre"][1] * h / face["height"])}
    img, pts = synth.render(face)
    buf = BytesIO()
    img.save(buf, "JPEG", quality=face["quality"])
    return buf.getvalue(), np.rint(pts).astype(np.int64)


def _write_images(args: tuple) -> None:
    folder, names, pool_ids, pool = args
    for n, k in zip(names, pool_ids):
        with open(os.path.join(folder, n), "wb") as f:
            f.write(pool[k])


def make_contest_set(out: Path, n_train: int = FULL_TRAIN, n_test: int = FULL_TEST, workers: int = 2) -> None:
    """The contest layout (FORMAT.md) at full size, test ground truth included; DONE marker last."""
    from landmarklib.csvfiles import LANDMARK_COLUMNS, N_QUERY
    from landmarklib.layout import N_POINTS
    if (out / "DONE").is_file():
        return
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers) as ex:
        pool = list(ex.map(_render_pool_face, range(POOL), chunksize=16))
    images = [b for b, _ in pool]
    rows = ["\t".join(map(str, p.reshape(-1).tolist())) for _, p in pool]
    rng = np.random.default_rng(0)
    (out / "SYNTHETIC.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "SYNTHETIC.json").write_text(json.dumps({"bench_scale": True, "pool": POOL}))
    for split, n in (("train", n_train), ("test", n_test)):
        folder = out / split / "images"
        folder.mkdir(parents=True, exist_ok=True)
        names = [rng.bytes(16).hex() + ".jpg" for _ in range(n)]
        ids = rng.integers(0, POOL, n)
        chunks = [(str(folder), names[i:i + 10_000], ids[i:i + 10_000], images) for i in range(0, n, 10_000)]
        with ProcessPoolExecutor(workers) as ex:
            list(ex.map(_write_images, chunks))
        with open(out / split / "landmarks.csv", "w") as f:
            f.write("\t".join(LANDMARK_COLUMNS) + "\n")
            f.writelines(f"{a}\t{rows[k]}\n" for a, k in zip(names, ids))
        if split == "test":
            with open(out / "test" / "test_points.csv", "w") as f:
                f.write("file_name\tpoint_index_list\n")
                f.writelines(f"{a}\t{json.dumps(rng.choice(N_POINTS, N_QUERY, replace=False).tolist())}\n"
                             for a in names)
    (out / "DONE").write_text(f"{time.perf_counter() - t0:.0f} s\n")


def test_rows(n_train: int) -> int:
    """Test images for n_train training images, in the contest's proportion."""
    return max(1, round(n_train * FULL_TEST / FULL_TRAIN))


def make_prefix_set(full: Path, out: Path, n_train: int) -> None:
    """The first n_train train rows and a proportional share of test rows, images hard-linked."""
    if (out / "DONE").is_file():
        return
    n_test = test_rows(n_train)
    (out / "SYNTHETIC.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "SYNTHETIC.json").write_text((full / "SYNTHETIC.json").read_text())
    for split, n, csvs in (("train", n_train, ["landmarks.csv"]), ("test", n_test, ["landmarks.csv", "test_points.csv"])):
        (out / split / "images").mkdir(parents=True, exist_ok=True)
        for name in csvs:
            with open(full / split / name) as src, open(out / split / name, "w") as dst:
                for i, line in enumerate(src):
                    if i > n:
                        break
                    dst.write(line)
                    if i and name == csvs[0]:
                        img = line.split("\t", 1)[0]
                        target = out / split / "images" / img
                        if not target.exists():
                            os.link(full / split / "images" / img, target)
    (out / "DONE").write_text("prefix\n")


# ---------------------------------------------------------------- one stage, in its own process

def run_stage(stage: str, data_dir: Path, work: Path, crop: int, steps: int) -> None:
    from landmarklib import csvfiles, data, eda, predict, score, submission, train
    from landmarklib.cache import build_cache, cache_root
    run = work / "run"
    if stage == "base":   # imports only: what every stage's figures start from
        print("imports")
    elif stage == "csv":
        names, lm = csvfiles.read_landmarks(data_dir / "train" / "landmarks.csv")
        print(f"{len(names)} rows, labels {lm.dtype} {lm.nbytes / 2**30:.2f} GiB")
    elif stage == "check":
        print(data.format_report(data.check(data_dir)))
    elif stage == "cache":
        for split in ("train", "test"):
            build_cache(data_dir, split, cache_root(data_dir), crop, "crop", progress=False)
    elif stage == "train":   # the train notebook's fit; validation covers the whole validation split
        h = train.fit({"data_dir": str(data_dir), "run_dir": str(run), "arch": "resnet18", "epochs": 1,
                       "crop_size": crop, "batch_size": 64, "max_train_steps": steps, "device": "cpu"},
                      progress=False)
        print(f"val MSE {h[-1]['val_mse_px']:.1f} px^2 over the validation split")
    elif stage == "predict":   # two checkpoints (best.pt and last.pt: the same epoch here) x flip TTA
        pts = predict.predict_split([run / "best.pt", run / "last.pt"], data_dir, "test", tta="flip",
                                    device="cpu", progress=False)
        split = data.load_split(data_dir, "test")
        submission.write_submission(work / "submission.csv", split.names, pts, split.indices)
    elif stage == "submission":
        submission.read_submission(work / "submission.csv", data_dir / "test" / "test_points.csv")
        print(f"test MSE {score.score_submission(work / 'submission.csv', data_dir):.1f}")
    elif stage == "eda_shape":
        df = eda.score_annotations(data_dir, use_model=False, progress=False)
        print(eda.summary(df))
    elif stage == "eda_image":   # the EDA notebook's one call: the shape stage, then out-of-fold models
        # (bounded steps) that predict every row with flip TTA
        df = eda.score_annotations(data_dir, use_model=True, progress=False, folds=2, epochs=1, crop_size=crop,
                                   device="cpu", max_train_steps=steps)
        print(eda.summary(df))
    else:
        raise ValueError(stage)


# ---------------------------------------------------------------- measuring a stage from outside

def _descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                ppid = int(open(f"/proc/{entry.name}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def _pss_anon(pid: int) -> int:
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss_Anon:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _du(path: Path) -> int:
    if not path.exists():
        return 0
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True)
    return int(out.stdout.split()[0]) if out.returncode == 0 else 0


def measure(stage: str, data_dir: Path, work: Path, crop: int, steps: int, writes: list[Path]) -> dict:
    before = sum(_du(p) for p in writes)
    cmd = [sys.executable, __file__, "--stage", stage, "--data-dir", str(data_dir), "--work", str(work),
           "--crop-size", str(crop), "--steps", str(steps)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]

    def sample():
        n, tree = 0, [proc.pid]
        while proc.poll() is None:
            if n % 20 == 0:   # the process tree every second, its memory every 50 ms
                tree = _descendants(proc.pid)
            peak[0] = max(peak[0], sum(_pss_anon(p) for p in tree))
            n += 1
            time.sleep(0.05)
    t = threading.Thread(target=sample)
    t.start()
    out = proc.communicate()[0]
    t.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"stage {stage} on {data_dir} failed:\n{out[-3000:]}")
    last = [line for line in out.strip().splitlines() if line.strip()][-1:] or [""]
    return {"stage": stage, "wall_s": wall, "peak_anon_gib": peak[0] / 2**30,
            "disk_gib": (sum(_du(p) for p in writes) - before) / 2**30, "says": last[0][:90]}


CONTEST_ZIP_GB = 13.5   # the 2020 contest's zip; its JPEGs are already compressed, so unpacked is about as large


def disk_plan(full: Path, n_train: int, n_test: int, crop: int = 128) -> str:
    """The full pipeline's local disk at `crop` px: images (measured here, and the contest's), the
    zip while it unpacks, the decode caches (exact sizes: one uint8 crop x crop x 3 per image) and
    the EDA's 64 px cache."""
    images = (_du(full / "train" / "images") + _du(full / "test" / "images")) / 1e9
    caches = ((n_train + n_test) * crop * crop * 3 + n_train * 64 * 64 * 3 + (n_train + n_test) * 971 * 2 * 2) / 1e9
    lines = [f"disk at {crop} px: decode caches {caches:.1f} GB (train + test at {crop} px, EDA at 64 px, labels)"]
    for what, img in (("these synthetic images", images), ("the contest's images", CONTEST_ZIP_GB)):
        peak = max(2 * img, img + caches)   # zip + unpacked while unpacking (the zip is deleted after), then caches
        lines.append(f"  with {what} ({img:.1f} GB): peak {peak:.1f} GB of the 80 GB a Colab runtime has")
    return "\n".join(lines)


def rehearse(data_dir: Path, crop: int, steps: int, stages: list[str]) -> list[dict]:
    work = data_dir / "bench_work"
    if "cache" in stages:   # a rehearsal builds its caches and trains its run, also when run again
        shutil.rmtree(data_dir / "cache", ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    if "eda_image" in stages:   # and the EDA builds its own (whole-face) cache
        from landmarklib.cache import cache_root, split_cache_dir  # here: the parent process imports no torch otherwise
        shutil.rmtree(split_cache_dir(cache_root(data_dir), "train", crop, "pad"), ignore_errors=True)
    work.mkdir(exist_ok=True)
    writes = {"cache": [data_dir / "cache"], "train": [work / "run"], "predict": [work / "submission.csv"],
              "eda_image": [data_dir / "cache"]}
    rows = []
    for stage in stages:
        r = measure(stage, data_dir, work, crop, steps, writes.get(stage, []))
        rows.append(r)
        print(f"  {stage:<11} {r['wall_s']:8.1f} s  {r['peak_anon_gib']:6.2f} GiB  disk {r['disk_gib']:6.2f} GiB  "
              f"{r['says']}", flush=True)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=Path("runs/bench_scale"), help="where the sets go (~8 GB at full size)")
    p.add_argument("--scales", nargs="+", default=["10000", "40000", "160000", "full"],
                   help="training rows per rehearsal; full = 393,930 (+ 99,819 test)")
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    p.add_argument("--crop-size", type=int, default=32, help="model input on CPU (the memory is the full set's)")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per epoch of each training stage")
    p.add_argument("--full", type=int, default=FULL_TRAIN, help="training rows of the full set (a smaller one for a "
                   "smoke run; test rows in the contest's proportion)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--stage", help=argparse.SUPPRESS)        # internal: run one stage in this process
    p.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.stage:
        run_stage(a.stage, a.data_dir, a.work, a.crop_size, a.steps)
        return 0

    full = a.root / ("full" if a.full == FULL_TRAIN else f"full{a.full}")
    t0 = time.perf_counter()
    make_contest_set(full, a.full, test_rows(a.full), workers=a.workers)
    print(f"contest-size set in {full}: {(full / 'DONE').read_text().strip()} to make "
          f"({time.perf_counter() - t0:.0f} s this time), {_du(full) / 2**30:.2f} GiB", flush=True)
    results = []
    for scale in a.scales:
        n = a.full if scale == "full" else int(scale)
        d = full if n == a.full else a.root / f"n{n}"
        if d != full:
            make_prefix_set(full, d, n)
        n_test = test_rows(n)
        print(f"\n{n:,} train + {n_test:,} test images ({d})", flush=True)
        rows = rehearse(d, a.crop_size, a.steps, ["base"] + [s for s in a.stages if s != "base"])
        base = rows[0]
        for r in rows[1:]:
            per = n + n_test if r["stage"] in ("check", "cache") else n_test if r["stage"] in ("predict", "submission") else n
            results.append(r | {"rows": n, "per_image_kib": (r["peak_anon_gib"] - base["peak_anon_gib"]) * 2**20 / per,
                                "per_image_ms": 1000 * (r["wall_s"] - base["wall_s"]) / per})
    scales = list(dict.fromkeys(r["rows"] for r in results))
    print("\npeak GiB, then per image above the base process: kB and ms (check and cache: train + test "
          "images; predict and submission: test images; the rest: train rows)")
    print(f"{'stage':<11}" + "".join(f"{format(n, ',') + ' rows':>27}" for n in scales))
    for stage in dict.fromkeys(r["stage"] for r in results):
        cells = {r["rows"]: r for r in results if r["stage"] == stage}
        print(f"{stage:<11}" + "".join(f"{c['peak_anon_gib']:>8.2f} GiB {c['per_image_kib']:6.1f} kB {c['per_image_ms']:5.2f} ms"
                                       if (c := cells.get(n)) else " " * 27 for n in scales))
    if len(scales) > 1:
        lo, hi = scales[0], scales[-1]
        print(f"\ngrowth per training row, the slope of peak memory from {lo:,} to {hi:,} rows:")
        for stage in dict.fromkeys(r["stage"] for r in results):
            cells = {r["rows"]: r for r in results if r["stage"] == stage}
            if lo in cells and hi in cells:
                print(f"  {stage:<11} {(cells[hi]['peak_anon_gib'] - cells[lo]['peak_anon_gib']) * 2**20 / (hi - lo):6.1f} kB")
    full_rows = [r for r in results if r["rows"] == a.full]
    if full_rows:
        print(f"\nat {a.full:,} rows every stage peaks at {max(r['peak_anon_gib'] for r in full_rows):.2f} GiB or less")
        print(disk_plan(full, a.full, test_rows(a.full)))
    print(f"\ncommand: python bench/bench_scale.py --root {a.root} --scales {' '.join(a.scales)} --stages "
          f"{' '.join(a.stages)} --crop-size {a.crop_size} --steps {a.steps}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
