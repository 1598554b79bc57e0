"""What an ensemble of the best runs buys, on the demo set: single runs (--seeds of each of --archs)
against the ensemble of the best 2 and best 3 by validation MSE (runs.best_runs, what the submission
notebook's run_dirs="best:K" takes), each with and without flip TTA, test MSE scored locally through
the submission file (rounded as the leaderboard gets it).

    python bench/bench_ensemble.py [--archs resnet18 resnet34] [--seeds 0 1 2] [--epochs 5] [--crop-size 64]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from landmarklib import runs  # noqa: E402
from landmarklib.config import DEMO  # noqa: E402
from landmarklib.data import load_split  # noqa: E402
from landmarklib.predict import predict_split  # noqa: E402
from landmarklib.score import score_submission  # noqa: E402
from landmarklib.submission import write_submission  # noqa: E402
from landmarklib.synth import make_dataset  # noqa: E402
from landmarklib.train import fit  # noqa: E402


def test_mse(run_dirs: list[Path], data: Path, tta: str, work: Path) -> float:
    test = load_split(data, "test")
    pred = predict_split([r / "best.pt" for r in run_dirs], data, "test", tta, "cpu", progress=False)
    sub = write_submission(work / f"sub_{len(list(work.glob('sub_*')))}.csv", test.names, pred, test.indices)
    return score_submission(sub, data)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", nargs="+", default=["resnet18", "resnet34"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--crop-size", type=int, default=64)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="lmens_") as tmp:
        tmp = Path(tmp)
        data = make_dataset(tmp / "data", **DEMO)
        root = tmp / "runs"
        t0 = time.perf_counter()
        for arch in a.archs:
            for seed in a.seeds:
                fit({"data_dir": str(data), "run_dir": str(root / f"{arch}_s{seed}"), "arch": arch, "seed": seed,
                     "epochs": a.epochs, "crop_size": a.crop_size, "device": "cpu"}, progress=False)
        print(f"demo set ({DEMO['n_train']} train, {DEMO['n_test']} test), {len(a.archs) * len(a.seeds)} runs of "
              f"{a.epochs} epochs at {a.crop_size} px trained in {time.perf_counter() - t0:.0f} s on CPU")
        table = runs.table(root)
        arms = [(f"{r['run']} (val {r['best_mse_px']:.2f})", [root / r["run"]]) for _, r in table.iterrows()]
        for k in (2, 3):
            chosen = runs.best_runs(root, k)
            arms.append((f"best:{k} ({' + '.join(c.name for c in chosen)})", chosen))
        print("\n| submitted | test MSE px², no TTA | test MSE px², flip TTA |\n| --- | --- | --- |")
        for label, dirs in arms:
            none, flip = (test_mse(dirs, data, tta, tmp) for tta in ("none", "flip"))
            print(f"| {label} | {none:.2f} | {flip:.2f} |", flush=True)
    print("\ncommand: python bench/bench_ensemble.py " + " ".join(
        [f"--archs {' '.join(a.archs)}", f"--seeds {' '.join(map(str, a.seeds))}", f"--epochs {a.epochs}",
         f"--crop-size {a.crop_size}"]))


if __name__ == "__main__":
    main()
