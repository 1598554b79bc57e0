"""Fine-tuning, rehearsed offline: every contest run starts from pretrained weights, which this
machine cannot download. So: pretrain resnet18 on a larger synthetic set of another render style
(synth's "alt": larger images, smaller tilted faces, darker skin, noise, blur), then fine-tune it on
the demo set through --weights-path under the organizers' budget (128 px, batch 32, 5 epochs, 800
training images), one arm per recipe, every arm for every seed, beside the first arm from scratch.
Scored on the demo set's 200 test images, without and with flip TTA.

    python bench/bench_finetune.py --pretrain-images 3000 --pretrain-epochs 6 --seeds 0 1 \
        --arm "" lr=5e-4 backbone_lr=0.1
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import ours, parse_arm  # noqa: E402

from landmarklib.synth import make_dataset  # noqa: E402
from landmarklib.train import fit  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pretrain-images", type=int, default=3000)
    p.add_argument("--pretrain-epochs", type=int, default=6)
    p.add_argument("--weights", type=Path, default=None, help="a pretrained best.pt to reuse (skips pretraining)")
    p.add_argument("--keep", type=Path, default=None, help="copy the pretrained best.pt here")
    p.add_argument("--arm", nargs="+", default=["", "lr=5e-4", "backbone_lr=0.1"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--no-scratch", action="store_true", help="leave out the first arm from scratch")
    p.add_argument("--crop-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lmbench_ft_"))
    try:
        weights = a.weights
        if weights is None:
            alt = make_dataset(tmp / "alt", a.pretrain_images, 0, seed=1, style="alt", workers=os.cpu_count())
            t = time.perf_counter()
            history = fit({"data_dir": str(alt), "run_dir": str(tmp / "pretrain"), "arch": "resnet18",
                           "crop_size": a.crop_size, "epochs": a.pretrain_epochs, "device": a.device}, progress=False)
            weights = tmp / "pretrain" / "best.pt"
            print(f"pretrained resnet18 on {a.pretrain_images} alt-style images, {a.pretrain_epochs} epochs, "
                  f"{a.crop_size} px: val MSE {history[-1]['val_mse_px']:.2f} px^2 ({time.perf_counter() - t:.0f} s)")
            if a.keep:
                shutil.copy(weights, a.keep)
        data = make_dataset(tmp / "demo", 1000, 200, seed=0, workers=os.cpu_count())
        print(f"fine-tuned on the demo set (800 / 200 split, 200 test), resnet18, {a.crop_size} px, batch 32, "
              f"{a.epochs} epochs, {a.device}")
        print(f"{'start':<8} {'arm':<32} {'seed':>4} {'test MSE px^2':>14} {'with flip TTA':>14} {'seconds':>8}",
              flush=True)
        results = {}
        starts = [("weights", {"weights_path": str(weights)}, a.arm)] + ([] if a.no_scratch else [("scratch", {}, a.arm[:1])])
        for start, extra, arms in starts:   # from scratch: the first arm only (the recipe to beat)
            for text in arms:
                for seed in a.seeds:
                    mse, tta, seconds = ours(a, data, tmp, parse_arm(text) | extra, seed)
                    results.setdefault((start, text), []).append((mse, tta))
                    print(f"{start:<8} {text or 'defaults':<32} {seed:>4} {mse:>14.2f} {tta:>14.2f} {seconds:>8.0f}",
                          flush=True)
        for (start, text), rows in results.items():
            mse, tta = np.array(rows).T
            print(f"{start:<8} {text or 'defaults':<32} mean {mse.mean():.2f} (flip TTA {tta.mean():.2f}), spread "
                  f"{np.ptp(mse):.2f} ({np.ptp(tta):.2f}) over {len(mse)} seed(s)")
        print("command: python bench/bench_finetune.py " + " ".join(sys.argv[1:]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
