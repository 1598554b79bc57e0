"""The training core: train_one_epoch, evaluate, and train_model, the one loop every run goes through
(a run of `python -m landmarklib.train` or of the train notebook, an ablation's run, the EDA's
out-of-fold models). train.py sets a run up around it: its run dir, resume, devices and the CLI.
"""
from __future__ import annotations

import csv
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from . import checkpoint
from .atomic import atomic_path, write_json
from .augment import augment, to_nchw
from .averaging import make_ema, recompute_bn
from .cache import Cache
from .config import DEFAULTS, OPTIMIZERS, PLACES, run_name, use_pretrained
from .errors import DataError
from .geometry import decode, encode, from_normalized
from .loader import BatchLoader
from .losses import make_loss
from .metric import mse_per_image, query_indices, select_points
from .models import create_model, param_groups
from .predict import predict_batches, predict_normalized
from .progress import bar, note
from .runtime import autocast_dtype, prepare_model
from .schedules import Plateau, lr_factor, peak_lr, weight_decay_at
from .tblog import RunLog


LOG_EVERY = 25   # steps between reads of the loss (progress bar, TensorBoard, the divergence check)
DIVERGED = 100.0   # a loss this many times the run's first is a diverged run, as is a non-finite one
TB_IMAGES = 4    # validation images drawn into TensorBoard each epoch
HISTORY_FIELDS = ["epoch", "lr", "train_loss", "val_mse_px", "val_mse30_px", "seconds", "images_per_s",
                  "data_wait"]


class Diverged(DataError):
    """The loss went non-finite or far above its start: the run stops before saving its weights."""


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


def train_one_epoch(model, loader: BatchLoader, optimizer, loss_fn, cfg: dict, epoch: int, *, lr_scale: float = 1.0,
                    scaler=None, amp_dtype=None, generator: torch.Generator | None = None,
                    progress: bool = True, log: RunLog | None = None, ema=None,
                    start_loss: float | None = None) -> dict:
    """One pass over `loader` (at most cfg['max_train_steps'] steps); the LR is set before every step,
    and `ema` (the weights' moving average) updated after it.
    Every LOG_EVERY steps the loss is read back once, for the progress bar and `log` alike, and
    checked: non-finite, or DIVERGED times `start_loss` (the run's first loss; this epoch's first
    where None), raises Diverged. Under DDP only the epoch's mean is checked, against a start averaged
    over the processes, so that every process stops together. The stats hold `start_loss` for the
    next epoch."""
    model.train()
    device = loader.device
    steps = len(loader) if cfg["max_train_steps"] is None else min(len(loader), cfg["max_train_steps"])
    total = torch.zeros((), device=device)   # summed on the device: no host sync per step
    seen, wait, start = 0, 0.0, time.perf_counter()
    steps_bar = bar(total=steps, desc=f"epoch {epoch + 1}/{cfg['epochs']}", disable=not progress, leave=False,
                    unit="step")
    it = iter(loader)
    for step in range(steps):
        t0 = time.perf_counter()
        images, targets, _ = next(it)
        wait += time.perf_counter() - t0
        t = epoch + step / steps
        lr = peak_lr(cfg) * lr_factor(cfg, t) * lr_scale
        for g in optimizer.param_groups:   # lr_scale: the backbone's share of the LR (cfg['backbone_lr'])
            g["lr"], g["weight_decay"] = lr * g.get("lr_scale", 1.0), weight_decay_at(cfg, t)
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
        if ema is not None:
            ema.update_parameters(model)
        total += loss.detach() * len(x)
        seen += len(x)
        if step % LOG_EVERY == 0:   # the only host sync in the loop
            value = loss.item()
            start_loss = value if start_loss is None else start_loss
            if not dist.is_initialized() and (not math.isfinite(value) or value > DIVERGED * start_loss):
                raise Diverged(f"diverged at epoch {epoch + 1} step {step + 1} (lr {lr:.2e}): loss {value:.3g}, "
                               f"{'not a number' if not math.isfinite(value) else 'from ' + format(start_loss, '.3g')}")
            steps_bar.set_postfix(loss=f"{value:.5f}", lr=f"{lr:.2e}", refresh=False)
            if log is not None:
                log.step(epoch * steps + step, value, lr)
        steps_bar.update()
    it.close()
    steps_bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize()
    stats = torch.stack([total, torch.tensor(float(seen), device=device),
                         torch.tensor(start_loss if start_loss is not None else math.nan, device=device)])
    if dist.is_initialized():
        dist.all_reduce(stats)
        stats[2] /= dist.get_world_size()
    start_loss = float(stats[2])
    seconds = time.perf_counter() - start
    mean = float(stats[0] / stats[1])
    if stats[1] > 0 and (not math.isfinite(mean) or mean > DIVERGED * start_loss):
        raise Diverged(f"diverged at epoch {epoch + 1} step {steps} (lr {lr:.2e}): the epoch's mean loss is "
                       f"{mean:.3g}, from {start_loss:.3g}")
    return {"train_loss": mean, "seconds": seconds, "images_per_s": float(stats[1]) / seconds,
            "data_wait": wait / seconds, "start_loss": start_loss}


@torch.no_grad()
def evaluate(model, loader: BatchLoader, cache: Cache, queries: dict[int, np.ndarray], amp_dtype=None) -> dict:
    """Validation MSE in original pixels: over all 971 points and over 30 points per image.
    Summed batch by batch, so memory does not grow with the validation split (78,786 images in 2020)."""
    dev = loader.device
    stats = torch.zeros(3, dtype=torch.float64, device=dev)
    for pred, rows in predict_batches(model, loader, amp_dtype):
        rows_np = rows.numpy()
        orig = decode(pred, torch.from_numpy(cache.affine[rows_np]).to(dev), cache.crop_size)
        truth = torch.from_numpy(cache.landmarks[rows_np]).to(dev, torch.float64)
        q = torch.from_numpy(np.stack([queries[int(r)] for r in rows_np])).to(dev)
        stats += torch.stack([mse_per_image(orig, truth).sum(),
                              mse_per_image(select_points(orig, q), select_points(truth, q)).sum(),
                              torch.tensor(float(len(rows_np)), device=dev, dtype=torch.float64)])
    if dist.is_initialized():
        dist.all_reduce(stats)
    return {"val_mse_px": float(stats[0] / stats[2]), "val_mse30_px": float(stats[1] / stats[2])}


def _write_history(path: Path, history: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
        w.writeheader()
        w.writerows(history)


def start_state(cfg: dict, cache: Cache, train_idx: np.ndarray, device: torch.device, resume: dict | None = None,
                mean_shape: np.ndarray | None = None, rank: int = 0, world: int = 1,
                steps_per_epoch: int = 1) -> checkpoint.TrainState:
    """A run's training state: a fresh model (the weights cfg names; the head at `mean_shape`,
    default the mean training target), its optimizer, scaler, plateau, RNGs and (cfg['ema'] > 0) the
    weights' moving average over a run of cfg['epochs'] x `steps_per_epoch` steps, or all of that
    continued from the checkpoint `resume`."""
    torch.manual_seed(cfg["seed"])
    fresh = resume is None         # a resumed run takes its weights from the checkpoint, not the network
    model = create_model(cfg["arch"], fresh and use_pretrained(cfg, cache.synthetic),
                         cfg["weights_path"] if fresh else None,
                         cache.targets().mean(train_idx) if mean_shape is None else mean_shape)
    prepare_model(model, device, cfg["channels_last"])
    amp_dtype = autocast_dtype(device, cfg["amp"])
    state = checkpoint.TrainState(model, make_optimizer(cfg, param_groups(model, cfg["backbone_lr"])),
                                  torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None,
                                  Plateau(cfg["drop_factor"], cfg["plateau_patience"]),
                                  torch.Generator(device=device).manual_seed(cfg["seed"] * world + rank), cfg,
                                  make_ema(model, cfg["ema"], cfg["epochs"] * steps_per_epoch) if cfg["ema"] else None)
    if resume is not None:
        state.load(resume, rank)
    return state


def train_model(cfg: dict, cache: Cache, train_idx: np.ndarray, val_idx: np.ndarray | None = None, *,
                device: torch.device, run_dir: Path | None = None, resume: dict | None = None,
                mean_shape: np.ndarray | None = None, record: dict | None = None, rank: int = 0, world: int = 1,
                progress: bool = True) -> tuple[torch.nn.Module, list[dict]]:
    """The training loop: train on `train_idx` of `cache` for cfg['epochs'] from start_state (fresh,
    or continued from the checkpoint `resume`), validate on `val_idx` after each epoch (when given)
    and, with a `run_dir`, write config.json (with the weights the backbone started from, and
    `record`), then last.pt / best.pt / history.csv and TensorBoard events after each epoch.
    What is validated, saved and returned is state.evaluated (the weights' moving average with
    cfg['ema']), with BatchNorm statistics recomputed on cfg['precise_bn'] training images first.
    Returns (that model, history)."""
    train_loader = BatchLoader(cache.images, cache.targets(), train_idx, cfg["batch_size"], shuffle=True,
                               seed=cfg["seed"], device=device, drop_last=True, rank=rank, world_size=world,
                               order=cfg["batch_order"])
    steps = len(train_loader) if cfg["max_train_steps"] is None else min(len(train_loader), cfg["max_train_steps"])
    state = start_state(cfg, cache, train_idx, device, resume, mean_shape, rank, world, steps)
    model = state.model
    writes = run_dir is not None and rank == 0
    if writes and resume is None:
        write_json(run_dir / "config.json", cfg | {"name": run_name(cfg), "weights": model.weights} | (record or {}))
    if resume is not None and progress:
        note(f"resuming {run_dir} from epoch {state.epoch}")
    amp_dtype = autocast_dtype(device, cfg["amp"])
    net = compile_model(model, cache.images[train_idx[:2]], device) if cfg["compile"] else model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    log = RunLog(run_dir if writes else None)
    loss_fn = make_loss(cfg)
    bn_loader = _bn_loader(cfg, cache, train_idx, device)
    if val_idx is not None:
        val_loader = BatchLoader(cache.images, cache.targets(), val_idx[rank::world], max(cfg["batch_size"], 64),
                                 shuffle=False, device=device)
        queries = dict(zip(val_idx.tolist(), query_indices(len(val_idx))))
    epochs = bar(range(state.epoch, cfg["epochs"]), desc=run_name(cfg), disable=not progress,
                 initial=state.epoch, total=cfg["epochs"], unit="epoch")
    start_loss = None
    try:
        for epoch in epochs:
            train_loader.set_epoch(epoch)
            scale = state.plateau.scale
            lr = peak_lr(cfg) * lr_factor(cfg, epoch + 0.5) * scale   # mid-epoch: a warmup epoch shows half
            stats = train_one_epoch(net, train_loader, state.optimizer, loss_fn, cfg, epoch, lr_scale=scale,
                                    scaler=state.scaler, amp_dtype=amp_dtype, generator=state.generator,
                                    progress=progress, log=log, ema=state.ema, start_loss=start_loss)
            start_loss = stats.pop("start_loss")
            if bn_loader is not None and (val_idx is not None or run_dir is not None or epoch + 1 == cfg["epochs"]):
                recompute_bn(state.evaluated, bn_loader)
            if val_idx is not None:
                stats |= evaluate(state.evaluated, val_loader, cache, queries, amp_dtype)
                if not math.isfinite(stats["val_mse_px"]):
                    raise Diverged(f"diverged at epoch {epoch + 1}: validation MSE {stats['val_mse_px']}")
                if cfg["schedule"] == "plateau":
                    state.plateau.step(stats["val_mse_px"])
            improved = state.end_epoch({"epoch": epoch + 1, "lr": lr} | stats)
            log.epoch(epoch + 1, state.history[-1])
            if log.writer is not None and val_idx is not None:
                _log_val_images(log, epoch + 1, state.evaluated, cache, val_idx[:TB_IMAGES], amp_dtype)
            if progress and val_idx is not None:
                epochs.set_postfix(val_mse_px=f"{stats['val_mse_px']:.3f}", loss=f"{stats['train_loss']:.5f}",
                                   refresh=False)
                note(f"epoch {epoch + 1}: lr {lr:.2e} train_loss {stats['train_loss']:.5f} "
                     f"val_mse_px {stats['val_mse_px']:.3f} val_mse30_px {stats['val_mse30_px']:.3f} "
                     f"({stats['images_per_s']:.0f} img/s, data wait {100 * stats['data_wait']:.1f} %)")
            if run_dir is None:
                continue
            augment_states = [state.generator.get_state()]
            if world > 1:
                augment_states = [None] * world
                dist.all_gather_object(augment_states, state.generator.get_state())
            if rank == 0:
                state.save(run_dir, improved, augment_states)
                _write_history(run_dir / "history.csv", state.history)
        if val_idx is not None and state.history and state.epoch == cfg["epochs"]:
            val = [h["val_mse_px"] for h in state.history]
            log.hparams({k: cfg[k] for k in DEFAULTS if k not in PLACES},
                        {"hparam/best_val_mse_px": min(val), "hparam/last_val_mse_px": val[-1]})
    except Diverged as e:   # nothing of this epoch is saved: last.pt and best.pt stay the last good ones
        kept = f"{run_dir}/last.pt keeps epoch {state.epoch}" if state.epoch and run_dir else "nothing was saved"
        raise Diverged(f"{e}; {kept}; lower lr (peak {peak_lr(cfg):.2e})") from None
    finally:
        log.close()
    return state.evaluated, state.history


def _bn_loader(cfg: dict, cache: Cache, train_idx: np.ndarray, device: torch.device) -> BatchLoader | None:
    """Precise BN's images: cfg['precise_bn'] training rows drawn once by the seed (the same on every
    torchrun rank, so every rank computes the same statistics), in whole batches of the training size
    (a last batch of one image has no variance), unaugmented, as validation sees them."""
    n = min(cfg["precise_bn"], len(train_idx))
    if n == 0:
        return None
    if n >= cfg["batch_size"]:
        n -= n % cfg["batch_size"]
    rows = np.sort(np.random.default_rng(cfg["seed"]).permutation(train_idx)[:n])
    return BatchLoader(cache.images, None, rows, cfg["batch_size"], shuffle=False, device=device)


def compile_model(model: torch.nn.Module, example: np.ndarray, device: torch.device) -> torch.nn.Module:
    """torch.compile(model), compiled now on `example` images (uint8 NHWC) so that a failure (no
    compiler, an unsupported op) shows here: the run then goes on uncompiled and says so."""
    try:
        compiled = torch.compile(model)
        with torch.no_grad():
            compiled.eval()(to_nchw(torch.from_numpy(np.ascontiguousarray(example)).to(device)))
        compiled.train()
        return compiled
    except Exception as e:  # any backend failure: training is still possible without it
        print(f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); "
              f"training uncompiled", file=sys.stderr)
        return model


def _log_val_images(log: RunLog, epoch: int, model, cache: Cache, rows: np.ndarray, amp_dtype) -> None:
    """A few validation images with predicted and true landmarks, in input pixels."""
    loader = BatchLoader(cache.images, None, rows, len(rows), shuffle=False, device=next(model.parameters()).device)
    pred, rows_t = predict_normalized(model, loader, amp_dtype)
    r = rows_t.numpy()
    truth = encode(cache.landmarks[r], cache.affine[r], cache.crop_size)
    log.images(epoch, cache.images[r], from_normalized(pred.cpu().numpy(), cache.crop_size),
               from_normalized(truth, cache.crop_size))
