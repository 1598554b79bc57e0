"""Training: train_one_epoch, evaluate, fit and the CLI, one loop read top to bottom.

    python -m landmarklib.train --data-dir D --run-dir R --arch resnext50 --epochs 12 --lr 1e-3 \
        --drop-at 8 --drop-factor 0.1 --loss smoothl1 --batch-size 64 --crop-size 128 --augment flip
    torchrun --nproc_per_node 2 -m landmarklib.train ...        (DistributedDataParallel)

Running the same command on the same run dir resumes from R/last.pt. Validation is the
organizers' split (first 80 % of landmarks.csv rows train, the rest validate) and is
reported in original-image pixels, the leaderboard's unit.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .atomic import atomic_path
from .augment import augment, flip_targets, to_nchw
from .cache import BatchLoader, Cache, build_cache
from .data import N_QUERY, DataError, split_indices
from .geometry import from_normalized
from .layout import N_POINTS
from .losses import make_loss
from .models import MIN_INPUT, create_model
from .schedules import Plateau, default_drop_at, lr_factor

# Defaults: plain literals; the CLI, the notebooks' parameters cell and fit(overrides) all
# start from here. Units: lr per sample-mean loss, epochs over the train split.
DEFAULTS: dict = {
    "data_dir": "data",
    "run_dir": "runs/train",
    "cache_dir": None,            # default: <data_dir>/cache (keep it on local disk, not Drive)
    "arch": "resnet18",
    "pretrained": False,
    "weights_path": None,
    "epochs": 12,
    "batch_size": 64,             # global, split across torchrun processes
    "lr": 1e-3,
    "optimizer": "adam",          # adam | adamw | sgd
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 0.0,
    "schedule": "drop",           # constant | drop | plateau | cosine | warm_restarts | onecycle
    "drop_at": None,              # epochs where the LR drops; None: at 2/3 of the run (8 of 12: the seed recipe)
    "drop_factor": 0.1,
    "warmup_epochs": 1,           # linear LR ramp over the first epoch: from random init full LR at step 0 hurts

    "t0": 4,
    "t_mult": 1,
    "plateau_patience": 1,
    "loss": "smoothl1",           # mse | smoothl1 | l1 | wing
    "smoothl1_beta": 0.02,
    "wing_w": 0.04,
    "wing_eps": 0.008,
    "crop_size": 128,
    "resize_mode": "crop",        # crop (organizers') | pad (keeps the whole face)
    "augment": "flip",            # none | flip | full
    "val_fraction": 0.2,
    "blocklist": None,            # CSV with a file_name column (and optional flagged) to leave out of training
    "seed": 0,
    "device": "auto",
    "amp": True,                  # bf16 autocast on GPUs that have it, else fp16 with a GradScaler
    "channels_last": True,
    "workers": None,              # cache build processes (default: all cores)
    "max_train_steps": None,      # cap per epoch, for smoke runs
}
# quick=True in the notebooks: a tiny budget that still runs every code path (tests, QUICK=1).
QUICK_EPOCHS = 4
QUICK = {"epochs": QUICK_EPOCHS, "crop_size": 32, "batch_size": 8, "max_train_steps": 2}
# Keys that may differ when resuming a run dir without changing what the run computes.
RESUMABLE_KEYS = {"data_dir", "run_dir", "cache_dir", "device", "workers", "epochs"}
OPTIMIZERS = ("adam", "adamw", "sgd")
HISTORY_FIELDS = ["epoch", "lr", "train_loss", "val_mse_px", "val_mse30_px", "seconds", "images_per_s",
                  "data_wait"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def make_optimizer(cfg: dict, params) -> torch.optim.Optimizer:
    name = cfg["optimizer"]
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], nesterov=cfg["nesterov"],
                               weight_decay=cfg["weight_decay"])
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


def autocast_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def train_one_epoch(model, loader: BatchLoader, optimizer, loss_fn, cfg: dict, epoch: int, plateau: Plateau,
                    scaler, amp_dtype, generator: torch.Generator, progress: bool = True) -> dict:
    model.train()
    device = loader.device
    steps = len(loader) if cfg["max_train_steps"] is None else min(len(loader), cfg["max_train_steps"])
    total = torch.zeros((), device=device)   # summed on the device: no host sync per step
    seen, wait, start = 0, 0.0, time.perf_counter()
    bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg['epochs']}", disable=not progress, leave=False)
    it = iter(loader)
    for step in range(steps):
        t0 = time.perf_counter()
        images, targets, _ = next(it)
        wait += time.perf_counter() - t0
        lr = cfg["lr"] * lr_factor(cfg, epoch + step / steps) * plateau.scale
        for g in optimizer.param_groups:
            g["lr"] = lr
        x, y = augment(images, targets, cfg["augment"], generator)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            pred = model(x)
        loss = loss_fn(pred.float(), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        total += loss.detach() * len(x)
        seen += len(x)
        bar.update()
        if progress and step % 25 == 0:   # one sync every 25 steps for the progress bar only
            bar.set_postfix(loss=f"{loss.item():.5f}", lr=f"{lr:.2e}")
    it.close()
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize()
    stats = torch.stack([total, torch.tensor(float(seen), device=device)])
    if dist.is_initialized():
        dist.all_reduce(stats)
    seconds = time.perf_counter() - start
    return {"train_loss": float(stats[0] / stats[1]), "seconds": seconds,
            "images_per_s": float(stats[1]) / seconds, "data_wait": wait / seconds}


def query_indices(n: int, seed: int = 2020) -> np.ndarray:
    """Fixed 30 random distinct points per validation image: the contest protocol, the same every epoch."""
    rng = np.random.default_rng(seed)
    return np.argsort(rng.random((n, N_POINTS)), axis=1)[:, :N_QUERY]


@torch.no_grad()
def predict_normalized(model, loader: BatchLoader, amp_dtype=None, flip_tta: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized predictions (N, 971, 2) in loader order, with the rows they belong to."""
    model.eval()
    preds, rows = [], []
    for images, _, r in loader:
        x = to_nchw(images)
        with torch.autocast(loader.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            p = model(x).float()
            if flip_tta:
                p = (p + flip_targets(model(x.flip(3)).float())) / 2
        preds.append(p)
        rows.append(r)
    return torch.cat(preds), torch.cat(rows)


def to_original_torch(pred: torch.Tensor, affine: torch.Tensor, size: int) -> torch.Tensor:
    """Normalized predictions -> original-image pixels (geometry.to_original, on the device)."""
    u = from_normalized(pred.double(), size)
    a = affine.double()[:, None, :]
    return (u - a[..., 2:] + 0.5) / a[..., :2] - 0.5


def evaluate(model, loader: BatchLoader, cache: Cache, queries: dict[int, np.ndarray], amp_dtype=None) -> dict:
    """Validation MSE in original pixels: over all 971 points and over 30 points per image."""
    pred, rows = predict_normalized(model, loader, amp_dtype)
    dev = pred.device
    rows_np = rows.numpy()
    orig = to_original_torch(pred, torch.from_numpy(cache.affine[rows_np]).to(dev), cache.size)
    truth = torch.from_numpy(cache.landmarks[rows_np]).to(dev, torch.float64)
    sq = ((orig - truth) ** 2).sum(-1)                          # (N, 971): dx^2 + dy^2
    q = torch.from_numpy(np.stack([queries[int(r)] for r in rows_np])).to(dev)
    stats = torch.stack([sq.sum() / (2 * N_POINTS), torch.gather(sq, 1, q).sum() / (2 * N_QUERY),
                         torch.tensor(float(len(rows_np)), device=dev, dtype=torch.float64)])
    if dist.is_initialized():
        dist.all_reduce(stats)
    return {"val_mse_px": float(stats[0] / stats[2]), "val_mse30_px": float(stats[1] / stats[2])}


def read_blocklist(path: str | Path) -> set[str]:
    """File names to leave out of training: a CSV with file_name (and, if present, flagged)."""
    import pandas as pd
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: blocklist not found")
    df = pd.read_csv(path)
    if "file_name" not in df.columns:
        raise DataError(f"{path}:1: blocklist needs a file_name column; got {list(df.columns)}")
    if "flagged" in df.columns:
        df = df[df["flagged"].astype(str).str.lower().isin(["true", "1"])]
    return set(df["file_name"].astype(str))


def _atomic_torch_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _write_history(path: Path, history: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
        w.writeheader()
        w.writerows(history)


NAME_KEYS = ("arch", "loss", "batch_size", "epochs", "crop_size", "resize_mode", "schedule", "drop_at", "lr",
             "augment", "blocklist", "seed")


def run_name(cfg: dict) -> str:
    """A run's recipe in its name (MMPose style): arch, loss, batch, epochs, input, schedule, ...,
    then every other recipe key that differs from DEFAULTS, so two recipes never share a run dir."""
    sched = cfg["schedule"] + ("@" + "-".join(map(str, cfg["drop_at"])) if cfg["schedule"] == "drop" else "")
    extras = [f"{k}-{cfg[k]}" for k in sorted(cfg)
              if k in DEFAULTS and k not in NAME_KEYS and k not in RESUMABLE_KEYS and cfg[k] != DEFAULTS[k]]
    return (f"{cfg['arch']}_{cfg['loss']}_b{cfg['batch_size']}_e{cfg['epochs']}_{cfg['crop_size']}px-"
            f"{cfg['resize_mode']}_{sched}_lr{cfg['lr']:g}_aug-{cfg['augment']}"
            + (f"_bl-{Path(cfg['blocklist']).stem}" if cfg["blocklist"] else "")
            + "".join(f"_{e}" for e in extras) + f"_s{cfg['seed']}")


def int_list(value, name: str = "value") -> list[int]:
    """8, [8, 10], "[8, 10]" or "8,10" (papermill -p passes lists as text) -> [8, 10]."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text.startswith("[") else [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"{name}: {text!r} is not a list of integers") from None
    if isinstance(value, (int, float)):
        value = [value]
    return [int(v) for v in value]


def make_config(overrides: dict | None = None) -> dict:
    cfg = dict(DEFAULTS)
    unknown = set(overrides or {}) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown config key(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    cfg.update(overrides or {})
    if cfg["drop_at"] is None:
        cfg["drop_at"] = default_drop_at(cfg["epochs"])
    cfg["drop_at"] = int_list(cfg["drop_at"], "drop_at")
    need = MIN_INPUT.get(cfg["arch"], 32)
    if cfg["crop_size"] < need:
        raise ValueError(f"{cfg['arch']} needs crop_size >= {need}, got {cfg['crop_size']}")
    return cfg


def check_same_recipe(run_dir: Path, cfg: dict) -> None:
    """Refuse to resume (or reuse) a run dir that holds another recipe."""
    saved = json.loads((run_dir / "config.json").read_text())
    diff = {k: (saved.get(k), cfg[k]) for k in cfg if k not in RESUMABLE_KEYS and saved.get(k) != cfg[k]}
    if diff:
        lines = ", ".join(f"{k}: {a!r} there vs {b!r} now" for k, (a, b) in diff.items())
        raise ValueError(f"{run_dir} holds a run with another recipe ({lines}); use a new run dir")


def fit(overrides: dict | None = None, progress: bool = True) -> list[dict]:
    """Train (or resume, or return at once if finished) the run in cfg['run_dir']; return its history."""
    cfg = make_config(overrides)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(cfg["device"])
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    progress = progress and rank == 0
    run_dir = Path(cfg["run_dir"])
    try:
        return _fit(cfg, device, rank, world, run_dir, progress)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _fit(cfg: dict, device: torch.device, rank: int, world: int, run_dir: Path, progress: bool) -> list[dict]:
    last = run_dir / "last.pt"
    ckpt = None
    if last.is_file():
        check_same_recipe(run_dir, cfg)
        ckpt = torch.load(last, map_location="cpu", weights_only=True)
        if ckpt["epoch"] >= cfg["epochs"]:
            if progress:
                print(f"{run_dir}: finished ({ckpt['epoch']} epochs), nothing to do")
            return ckpt["history"]
    torch.manual_seed(cfg["seed"])
    cache_root = Path(cfg["cache_dir"] or Path(cfg["data_dir"]) / "cache")
    if rank == 0:
        cache = build_cache(cfg["data_dir"], "train", cache_root, cfg["crop_size"], cfg["resize_mode"],
                            cfg["workers"], progress)
    if world > 1:
        dist.barrier()
    if rank != 0:
        cache = build_cache(cfg["data_dir"], "train", cache_root, cfg["crop_size"], cfg["resize_mode"],
                            cfg["workers"], False)
    train_idx, val_idx = split_indices(len(cache), cfg["val_fraction"])
    if cfg["blocklist"]:
        blocked = read_blocklist(cfg["blocklist"])
        kept = ~np.isin(cache.names[train_idx], list(blocked))
        train_idx = train_idx[kept]
        if progress:
            print(f"blocklist {cfg['blocklist']}: {len(blocked)} names, {int((~kept).sum())} training rows left out "
                  f"(validation unchanged, so runs with and without compare on the same images)")
    if len(train_idx) < cfg["batch_size"]:
        raise ValueError(f"{len(train_idx)} training images is fewer than one batch of {cfg['batch_size']}")
    targets = cache.targets()
    model = create_model(cfg["arch"], cfg["pretrained"], cfg["weights_path"], targets[train_idx].mean(0))
    model.to(device)
    if cfg["channels_last"] and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg, model.parameters())
    amp_dtype = autocast_dtype(device, cfg["amp"])
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    plateau = Plateau(cfg.get("drop_factor", 0.1), cfg["plateau_patience"])
    generator = torch.Generator(device=device).manual_seed(cfg["seed"] * world + rank)
    history, best, start_epoch = [], math.inf, 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        plateau.load_state_dict(ckpt["plateau"])
        generator.set_state(ckpt["rng"]["augment"][rank % len(ckpt["rng"]["augment"])])
        torch.set_rng_state(ckpt["rng"]["torch"])
        history, best, start_epoch = ckpt["history"], ckpt["best"], ckpt["epoch"]
        if progress:
            print(f"resuming {run_dir} from epoch {start_epoch}")
    elif rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(cfg | {"name": run_name(cfg)}, indent=1) + "\n")
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = make_loss(cfg["loss"], cfg["smoothl1_beta"], cfg["wing_w"], cfg["wing_eps"])
    train_loader = BatchLoader(cache.images, targets, train_idx, cfg["batch_size"], shuffle=True, seed=cfg["seed"],
                               device=device, drop_last=True, rank=rank, world_size=world)
    val_loader = BatchLoader(cache.images, targets, val_idx[rank::world], max(cfg["batch_size"], 64), shuffle=False,
                             device=device)
    queries = dict(zip(val_idx.tolist(), query_indices(len(val_idx))))
    epochs = tqdm(range(start_epoch, cfg["epochs"]), desc=run_name(cfg), disable=not progress,
                  initial=start_epoch, total=cfg["epochs"])
    for epoch in epochs:
        train_loader.set_epoch(epoch)
        lr = cfg["lr"] * lr_factor(cfg, epoch + 0.5) * plateau.scale   # mid-epoch: a warmup epoch shows half
        stats = train_one_epoch(net, train_loader, optimizer, loss_fn, cfg, epoch, plateau, scaler, amp_dtype,
                                generator, progress)
        stats |= evaluate(model, val_loader, cache, queries, amp_dtype)
        if cfg["schedule"] == "plateau":
            plateau.step(stats["val_mse_px"])
        history.append({"epoch": epoch + 1, "lr": lr} | stats)
        epochs.set_postfix(val_mse_px=f"{stats['val_mse_px']:.3f}", loss=f"{stats['train_loss']:.5f}")
        if progress:
            tqdm.write(f"epoch {epoch + 1}: lr {lr:.2e} train_loss {stats['train_loss']:.5f} "
                       f"val_mse_px {stats['val_mse_px']:.3f} val_mse30_px {stats['val_mse30_px']:.3f} "
                       f"({stats['images_per_s']:.0f} img/s, data wait {100 * stats['data_wait']:.1f} %)")
        augment_states = [generator.get_state()]
        if world > 1:
            gathered = [None] * world
            dist.all_gather_object(gathered, generator.get_state())
            augment_states = gathered
        if rank == 0:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scaler": scaler.state_dict() if scaler is not None else {}, "plateau": plateau.state_dict(),
                     "rng": {"torch": torch.get_rng_state(), "augment": [s.cpu() for s in augment_states]},
                     "epoch": epoch + 1, "best": min(best, stats["val_mse_px"]), "history": history, "config": cfg}
            if stats["val_mse_px"] < best:
                _atomic_torch_save(state, run_dir / "best.pt")
            _atomic_torch_save(state, last)
            _write_history(run_dir / "history.csv", history)
        best = min(best, stats["val_mse_px"])
    return history


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m landmarklib.train", description=__doc__.splitlines()[0])
    for key, default in DEFAULTS.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif isinstance(default, list):
            p.add_argument(flag, type=int, nargs="*", default=default)
        elif key == "drop_at":
            p.add_argument(flag, type=int, nargs="*", default=default)
        elif key in ("max_train_steps", "workers"):
            p.add_argument(flag, type=int, default=default)
        else:
            p.add_argument(flag, type=type(default) if default is not None else str, default=default)
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        history = fit(vars(args))
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if history and int(os.environ.get("RANK", "0")) == 0:
        h = history[-1]
        print(f"done: epoch {h['epoch']} val_mse_px {h['val_mse_px']:.3f} val_mse30_px {h['val_mse30_px']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
