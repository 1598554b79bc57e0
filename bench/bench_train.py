"""Training benchmarks.

throughput (default): training images/s, side by side on the same device and the same
synthetic images: our loop (decode cache, device augmentation, loss on the device; AMP +
channels_last on a GPU) vs a loop like the organizers' hack_train.py (per-image decode
DataLoader, fp32, predictions moved to the CPU for the loss). On a GPU it adds our loop
in fp32 without channels_last, and the fraction of step time spent waiting for data.

    python bench/bench_train.py --archs resnet18 resnext50 --crop-size 128 --steps 20 [--compile]

--compile adds the same loop under torch.compile, measured after a warm-up epoch that compiles.

recipe: our training recipe vs the organizers' under the same budget, each predicted and
scored on the synthetic test set (the training-engine issue's acceptance figure). --arm runs
variants of ours side by side (settings over the defaults), each for every --seeds.

    python bench/bench_train.py --recipe --n-train 1000 --n-test 200 --epochs 5 --device cpu
    python bench/bench_train.py --recipe --no-baseline --seeds 0 1 --arm "" precise_bn=256 "ema=0.05,precise_bn=256"
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
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PerImageDataset, baseline_model, baseline_predict, baseline_train_steps  # noqa: E402

from landmarklib.cache import build_cache  # noqa: E402
from landmarklib.config import make_config  # noqa: E402
from landmarklib.data import load_split, split_indices  # noqa: E402
from landmarklib.geometry import fit_affine, to_original  # noqa: E402
from landmarklib.predict import predict_split  # noqa: E402
from landmarklib.runtime import resolve_device  # noqa: E402
from landmarklib.score import score_submission  # noqa: E402
from landmarklib.submission import write_submission  # noqa: E402
from landmarklib.synth import make_dataset  # noqa: E402
from landmarklib.engine import train_model  # noqa: E402
from landmarklib.train import fit  # noqa: E402


def ours_throughput(cache, arch, device, batch, steps, amp, channels_last, compile=False):
    """Images/s of the training core's second epoch of `steps` steps (the first warms up: cudnn
    autotune, the allocator, and torch.compile's first graphs)."""
    cfg = make_config({"arch": arch, "batch_size": batch, "crop_size": cache.crop_size, "augment": "flip",
                       "max_train_steps": steps, "amp": amp, "channels_last": channels_last,
                       "schedule": "constant", "epochs": 2, "lr": 1e-4, "compile": compile})
    _, history = train_model(cfg, cache, np.arange(len(cache)), device=device, progress=False)
    return history[-1]


def baseline_throughput(split, arch, device, batch, steps, crop_size, workers):
    model = baseline_model(arch, device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
    loader = DataLoader(PerImageDataset(split, np.arange(len(split.names)), crop_size), batch_size=batch, shuffle=True,
                        num_workers=workers, drop_last=True)
    baseline_train_steps(model, loader, opt, device, 2)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    n = baseline_train_steps(model, loader, opt, device, steps)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


def throughput(a, tmp: Path) -> None:
    device = resolve_device(a.device)
    workers = a.workers or min(8, os.cpu_count() or 1)
    n_images = max(a.batch * (a.steps + 4), 256)
    data = make_dataset(tmp / "data", n_images, 0, seed=0, workers=os.cpu_count())
    cache = build_cache(data, "train", tmp / "cache", a.crop_size, "crop", progress=False)
    split = load_split(data, "train")
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else os.cpu_count()} cores), "
          f"torch {torch.__version__}, {a.crop_size} px, batch {a.batch}, {a.steps} timed steps, "
          f"baseline DataLoader workers {workers}")
    cuda = device.type == "cuda"
    print(f"{'arch':<12} {'ours img/s':>11} {'data wait':>9} {'baseline img/s':>15} {'ratio':>6}"
          + (f" {'ours fp32 img/s':>16} {'AMP+CL gain':>11} {'fp16+scaler img/s':>18}" if cuda else "")
          + (f" {'compiled img/s':>15} {'compile gain':>12}" if a.compile else ""))
    for arch in a.archs:
        ours = ours_throughput(cache, arch, device, a.batch, a.steps, "auto", True)
        base = baseline_throughput(split, arch, device, a.batch, a.steps, a.crop_size, workers)
        line = (f"{arch:<12} {ours['images_per_s']:>11.0f} {100 * ours['data_wait']:>8.1f}% {base:>15.0f} "
                f"{ours['images_per_s'] / base:>5.1f}x")
        if cuda:   # fp32 without channels_last; and fp16 + GradScaler, the path a T4 takes
            fp32 = ours_throughput(cache, arch, device, a.batch, a.steps, "off", False)
            fp16 = ours_throughput(cache, arch, device, a.batch, a.steps, "fp16", True)
            line += (f" {fp32['images_per_s']:>16.0f} {ours['images_per_s'] / fp32['images_per_s']:>10.2f}x"
                     f" {fp16['images_per_s']:>18.0f}")
        if a.compile:
            comp = ours_throughput(cache, arch, device, a.batch, a.steps, "auto", True, compile=True)
            line += f" {comp['images_per_s']:>15.0f} {comp['images_per_s'] / ours['images_per_s']:>11.2f}x"
        print(line, flush=True)


def parse_arm(text: str) -> dict:
    """'ema=0.05,precise_bn=256' -> {'ema': '0.05', 'precise_bn': '256'} (checked by make_config); '' the defaults."""
    pairs = [p.split("=", 1) for p in text.split(",") if p]
    if any(len(p) != 2 for p in pairs):
        raise SystemExit(f"--arm {text!r}: expected key=value[,key=value...]")
    make_config(dict(pairs))
    return dict(pairs)


def ours(a, data: Path, tmp: Path, arm: dict, seed: int) -> tuple[float, float, float]:
    """Our recipe (defaults, then `arm`) trained, predicted and scored on the test set: (MSE px^2 without
    test-time augmentation, with flip TTA (the submission notebook's default), training seconds)."""
    run = tmp / f"ours_{len(list(tmp.glob('ours_*')))}"
    torch.manual_seed(0)
    t = time.perf_counter()
    fit({"data_dir": str(data), "run_dir": str(run), "arch": "resnet18", "crop_size": a.crop_size,
         "epochs": a.epochs, "device": a.device, "seed": seed} | arm, progress=False)   # defaults otherwise (batch 32)
    seconds = time.perf_counter() - t
    test = load_split(data, "test")
    scores = []
    for tta in ("none", "flip"):
        pred = predict_split([run / "best.pt"], data, tta=tta, device=a.device, progress=False)
        write_submission(run / f"sub_{tta}.csv", test.names, pred, test.indices)
        scores.append(score_submission(run / f"sub_{tta}.csv", data))
    return scores[0], scores[1], seconds


def recipe(a, tmp: Path) -> None:
    device = resolve_device(a.device)
    data = make_dataset(tmp / "data", a.n_train, a.n_test, seed=0, workers=os.cpu_count())
    n_train = len(split_indices(len(load_split(data, "train").names))[0])
    print(f"synthetic set {a.n_train} train ({n_train} / {a.n_train - n_train} split) + {a.n_test} test, resnet18, "
          f"{a.crop_size} px, batch 32, {a.epochs} epochs, {device}, no pretrained weights")
    d = make_config({"pretrained": False})
    print(f"ours = defaults ({d['optimizer']} lr {d['lr']:g} from scratch, schedule {d['schedule']}, normalized targets, mean-shape "
          f"head, {d['loss']}, {d['augment']} augment, ema {d['ema']:g}, precise_bn {d['precise_bn']}) + the arm")
    print(f"{'arm':<40} {'seed':>4} {'test MSE px^2':>14} {'with flip TTA':>14} {'seconds':>8}", flush=True)
    results = {}
    for text in a.arm:
        for seed in a.seeds:
            mse, tta, seconds = ours(a, data, tmp, parse_arm(text), seed)
            results.setdefault(text, []).append((mse, tta, seconds))
            print(f"{text or 'defaults':<40} {seed:>4} {mse:>14.2f} {tta:>14.2f} {seconds:>8.0f}", flush=True)
    for text, rows in results.items():
        mse, tta, seconds = np.array(rows).T
        print(f"{text or 'defaults':<40} mean {mse.mean():.2f} (flip TTA {tta.mean():.2f}), spread (max - min) "
              f"{np.ptp(mse):.2f} ({np.ptp(tta):.2f}) over {len(mse)} seed(s); {seconds.mean():.0f} s a run")
    if a.no_baseline:
        return
    # The organizers' recipe: same split, arch, crop, batch, epochs; their lr.
    torch.manual_seed(0)
    train, test = load_split(data, "train"), load_split(data, "test")
    model = baseline_model("resnet18", device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
    loader = DataLoader(PerImageDataset(train, np.arange(n_train), a.crop_size), batch_size=32, shuffle=True, num_workers=2,
                        drop_last=True)
    t = time.perf_counter()
    for _ in range(a.epochs):
        baseline_train_steps(model, loader, opt, device)
    base_s = time.perf_counter() - t
    crop_pred, rows = baseline_predict(model, DataLoader(PerImageDataset(test, np.arange(len(test.names)), a.crop_size),
                                                         batch_size=64, num_workers=2), device)
    from PIL import Image
    affine = np.stack([fit_affine(*Image.open(test.image_path(r)).size, a.crop_size, "crop") for r in rows])
    write_submission(tmp / "base.csv", test.names[rows], to_original(crop_pred, affine), test.indices[rows])
    base = score_submission(tmp / "base.csv", data)
    print(f"organizers' recipe (Adam amsgrad 1e-3, MSE on crop pixels, no augment): test MSE {base:.2f} px^2 "
          f"({base_s:.0f} s)")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--recipe", action="store_true")
    p.add_argument("--archs", nargs="+", default=["resnet18", "resnext50"])
    p.add_argument("--crop-size", type=int, default=128)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="also torch.compile'd, side by side with eager")
    p.add_argument("--arm", nargs="+", default=[""], help="--recipe: settings over the defaults, each arm one "
                   "'key=value,key=value' ('' the defaults); every arm runs every seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="--recipe: training seeds")
    p.add_argument("--no-baseline", action="store_true", help="--recipe: leave out the organizers' recipe")
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lmbench_"))
    try:
        (recipe if a.recipe else throughput)(a, tmp)
        print("command: python bench/bench_train.py " + " ".join(sys.argv[1:]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
