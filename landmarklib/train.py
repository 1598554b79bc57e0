"""A training run (this module; notebooks/train.ipynb calls its fit): fit and the CLI set up the run
dir, resume, the devices and the data around the training core (engine.train_model).

    python -m landmarklib.train --data-dir D --run-dir R --arch resnext50 --epochs 12 --lr 1e-3 \
        --drop-at 8 --drop-factor 0.1 --loss smoothl1 --batch-size 64 --crop-size 128 --augment flip
    torchrun --nproc_per_node 2 -m landmarklib.train ...        (DistributedDataParallel)

Running the same command on the same run dir resumes from R/last.pt. Validation is the
organizers' split (first 80 % of landmarks.csv rows train, the rest validate) and is
reported in original-image pixels, the leaderboard's unit.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from . import checkpoint
from .atomic import run_lock, write_json
from .cache import build_cache, cache_root
from .config import RUN, check_same_data, check_same_recipe, describe, make_config, read_run_config, resolve_run_dir
from .csvfiles import count_rows, read_blocklist
from .data import check_split, fingerprint, split_indices
from .engine import train_model
from .errors import DataError, check_output, cli
from .models import read_weights
from .runtime import autocast_dtype, device_report, format_device_report, resolve_device, warn_if_colab_without_gpu
from .settings import add_arguments


def fit(overrides: dict | None = None, progress: bool = True) -> list[dict]:
    """Train (or resume, or return at once if finished) the run in cfg['run_dir']; return its history.
    Everything that can be checked is checked before the long work: data, blocklist, weights file,
    the run dir (writable, not in use by another process, holding this recipe on this data)."""
    cfg = resolve_run_dir(make_config(overrides))
    rank = _processes()[1]
    run_dir = Path(cfg["run_dir"])
    data_id = fingerprint(cfg["data_dir"])
    csv = Path(cfg["data_dir"]) / "train" / "landmarks.csv"
    check_split(count_rows(csv), cfg["val_fraction"], cfg["batch_size"], csv)
    blocked = read_blocklist(cfg["blocklist"]) if cfg["blocklist"] else None
    if cfg["weights_path"]:
        read_weights(cfg["weights_path"])   # a state dict, or one clear error now (what matches: when the model is built)
    if rank == 0:
        check_output(run_dir, "folder")
    with run_lock(run_dir) if rank == 0 else contextlib.nullcontext():
        ckpt = _resume_point(run_dir, cfg, data_id)
        if ckpt is not None and ckpt["epoch"] >= cfg["epochs"]:
            if progress and rank == 0:
                print(f"{run_dir}: finished ({ckpt['epoch']} epochs), nothing to do")
            return ckpt["history"]
        return _fit(cfg, ckpt, data_id, blocked, progress)


def _processes() -> tuple[int, int, int]:
    """(world size, rank, local rank) under torchrun; (1, 0, 0) in a single process."""
    return (int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")),
            int(os.environ.get("LOCAL_RANK", "0")))


def _resume_point(run_dir: Path, cfg: dict, data_id: dict) -> dict | None:
    """last.pt to resume from (None for a new run), once run_dir is known to hold this recipe on this data.
    The check applies to any run dir holding a run (config.json), with or without last.pt."""
    if (run_dir / "config.json").is_file():
        check_same_recipe(run_dir, cfg)
        check_same_data(run_dir, data_id)
    elif (run_dir / "last.pt").is_file() or (run_dir / "best.pt").is_file():
        raise DataError(f"{run_dir}: holds checkpoints but no config.json, so its recipe is unknown; use a new run dir")
    if not (run_dir / "last.pt").is_file():
        return None
    return checkpoint.read_last(run_dir, read_run_config(run_dir))


def _fit(cfg: dict, ckpt: dict | None, data_id: dict, blocked: set | None, progress: bool) -> list[dict]:
    """fit's long part, in the locked run dir: device and processes, cache, split, then train_model."""
    world, rank, local_rank = _processes()
    run_dir = Path(cfg["run_dir"])
    device = resolve_device(cfg["device"])
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    progress = progress and rank == 0
    amp_dtype = autocast_dtype(device, cfg["amp"])
    report = device_report(device, amp_dtype, cfg["channels_last"])
    if progress:
        print(describe(cfg))
        print(format_device_report(report))
        warn_if_colab_without_gpu(device)
        if data_id["synthetic"]:
            print(f"data: {cfg['data_dir']} is the SYNTHETIC demo set, not the contest data")
    try:
        # Rank 0 builds the cache first; the others then find it built.
        if rank == 0:
            cache = build_cache(cfg["data_dir"], "train", cache_root(cfg["data_dir"], cfg["cache_dir"]),
                                cfg["crop_size"], cfg["resize_mode"], cfg["workers"], progress)
        if world > 1:
            dist.barrier()
        if rank != 0:
            cache = build_cache(cfg["data_dir"], "train", cache_root(cfg["data_dir"], cfg["cache_dir"]),
                                cfg["crop_size"], cfg["resize_mode"], cfg["workers"], False)
        train_idx, val_idx = split_indices(len(cache), cfg["val_fraction"])
        if blocked is not None:
            kept = ~np.isin(cache.names[train_idx], list(blocked))
            train_idx = train_idx[kept]
            if progress:
                print(f"blocklist {cfg['blocklist']}: {len(blocked)} names, {int((~kept).sum())} training rows left "
                      f"out (validation unchanged, so runs with and without compare on the same images)")
        if len(train_idx) < cfg["batch_size"]:   # check_split passed: the blocklist left too few
            raise DataError(f"{cfg['blocklist']}: leaves {len(train_idx)} training images, fewer than one batch of "
                            f"{cfg['batch_size']}; lower batch_size or block fewer rows")
        if rank == 0:
            write_json(run_dir / "device.json", _device_log(run_dir / "device.json")
                       + [report | {"epoch": ckpt["epoch"] if ckpt else 0}])
        _, history = train_model(cfg, cache, train_idx, val_idx, device=device, run_dir=run_dir, resume=ckpt,
                                 record={"data": data_id}, rank=rank, world=world, progress=progress)
        return history
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _device_log(path: Path) -> list:
    """device.json's list of starts (where each start of this run executed). It is a log, not an input: an
    unreadable one (empty, half synced from Drive, not a list) is kept aside as device.json.unreadable and
    the list starts again, in one line, rather than blocking the run."""
    if not path.is_file():
        return []
    try:
        starts = json.loads(path.read_text())
        if isinstance(starts, list) and all(isinstance(s, dict) for s in starts):
            return starts
        problem = f"holds a {type(starts).__name__}, not a list of starts"
    except (ValueError, UnicodeDecodeError) as e:
        problem = f"unreadable ({e})"
    os.replace(path, path.with_name(path.name + ".unreadable"))
    print(f"{path}: {problem}; kept as {path.name}.unreadable, starting the list again")
    return []


def get_args_parser() -> argparse.ArgumentParser:
    """One flag per run setting (config.RUN), with its default, what it allows and its help line."""
    p = argparse.ArgumentParser(prog="python -m landmarklib.train", description=__doc__.splitlines()[0])
    add_arguments(p, RUN)
    return p


def summary(history: list[dict], run_dir: Path | str) -> str:
    """One line on a run: its best validation MSE and the epoch it came at, the last epoch's, the run dir."""
    if not history:
        return f"no epoch trained; run dir {run_dir}"
    best = min(history, key=lambda h: h["val_mse_px"])
    last = history[-1]
    return (f"best val_mse_px {best['val_mse_px']:.3f} (val_mse30_px {best['val_mse30_px']:.3f}) at epoch "
            f"{best['epoch']} of {last['epoch']}; last epoch {last['val_mse_px']:.3f}; best.pt in {run_dir}")


@cli
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    history = fit(vars(args))
    if int(os.environ.get("RANK", "0")) == 0:
        print("done: " + summary(history, resolve_run_dir(make_config(vars(args)))["run_dir"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
