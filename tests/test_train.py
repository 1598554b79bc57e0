import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from landmarklib.csvfiles import read_blocklist
from landmarklib.data import split_indices
from landmarklib.train import fit

TINY = {"arch": "resnet18", "crop_size": 32, "batch_size": 8, "lr": 1e-3, "device": "cpu", "workers": 1,
        "augment": "flip", "schedule": "drop", "drop_at": [2], "epochs": 3}


def _cfg(synth_dir, tmp_path, **kw):
    return TINY | {"data_dir": str(synth_dir), "cache_dir": str(tmp_path / "cache"),
                   "run_dir": str(tmp_path / "run")} | kw


def _history(run_dir):
    with open(Path(run_dir) / "history.csv") as f:
        return list(csv.DictReader(f))


def test_fit_writes_the_run_dir_and_learns(synth_dir, tmp_path):
    cfg = _cfg(synth_dir, tmp_path, epochs=8, drop_at=[6], loss="mse", augment="none", warmup=1 / 8, lr_scaling="none")
    h = fit(cfg, progress=False)
    run = tmp_path / "run"
    assert {"config.json", "history.csv", "last.pt", "best.pt"} <= {p.name for p in run.iterdir()}
    rows = _history(run)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 9))
    assert list(rows[0]) == ["epoch", "lr", "train_loss", "val_mse_px", "val_mse30_px", "seconds", "images_per_s",
                             "data_wait"]
    lrs = [float(r["lr"]) for r in rows]                                  # mid-epoch LR
    assert lrs[0] == pytest.approx(5e-4, rel=0.01) and lrs[1:6] == pytest.approx([1e-3] * 5)   # warmup, then flat
    assert lrs[6:] == pytest.approx([1e-4] * 2)                                                # dropped at epoch 6
    first, last = np.mean([r["train_loss"] for r in h[:2]]), np.mean([r["train_loss"] for r in h[-2:]])
    assert last < 0.85 * first, (first, last)
    ckpt = torch.load(run / "last.pt", weights_only=True)               # loads without unpickling code
    assert ckpt["epoch"] == 8 and ckpt["config"]["arch"] == "resnet18"
    again = fit(cfg, progress=False)
    assert again == h                                                     # finished: returned, not retrained


def test_resume_with_another_recipe_is_refused(synth_dir, tmp_path):
    fit(_cfg(synth_dir, tmp_path, epochs=1), progress=False)
    with pytest.raises(ValueError, match=r"another recipe \(lr: 0.001 there vs 0.01 now\)"):
        fit(_cfg(synth_dir, tmp_path, epochs=2, lr=1e-2), progress=False)


def test_killed_and_resumed_run_equals_uninterrupted(synth_dir, tmp_path):
    def cmd(run_dir):
        args = [sys.executable, "-m", "landmarklib.train", "--data-dir", str(synth_dir), "--run-dir", str(run_dir),
                "--cache-dir", str(tmp_path / "cache"), "--arch", "resnet18", "--crop-size", "32",
                "--batch-size", "8", "--epochs", "4", "--drop-at", "2", "--augment", "full", "--device", "cpu",
                "--workers", "1", "--seed", "3"]
        return args
    env = os.environ | {"TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    straight = subprocess.run(cmd(tmp_path / "a"), env=env, capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr
    proc = subprocess.Popen(cmd(tmp_path / "b"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    hist = tmp_path / "b" / "history.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not (hist.is_file() and len(_history(tmp_path / "b")) >= 1):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)                                   # a Colab disconnect, mid-epoch 2
    proc.wait()
    assert 1 <= len(_history(tmp_path / "b")) < 4
    resumed = subprocess.run(cmd(tmp_path / "b"), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a, b = _history(tmp_path / "a"), _history(tmp_path / "b")
    assert len(a) == len(b) == 4
    for ra, rb in zip(a, b):
        for k in ("lr", "train_loss", "val_mse_px", "val_mse30_px"):
            assert float(ra[k]) == pytest.approx(float(rb[k]), rel=1e-6), k


def test_blocklist_leaves_rows_out_of_training_only(synth_dir, tmp_path):
    names = (synth_dir / "train" / "landmarks.csv").read_text().splitlines()[1:]
    names = [n.split("\t", 1)[0] for n in names]
    bl = tmp_path / "bad.csv"
    bl.write_text("file_name,score,reason,flagged\n" + f"{names[0]},9,x,True\n{names[1]},8,x,False\n"
                  f"{names[-1]},7,x,True\n")
    assert read_blocklist(bl) == {names[0], names[-1]}
    train_idx, val_idx = split_indices(60, 0.2)
    assert len(train_idx) == 48 and val_idx[0] == 48


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo on linux")
def test_torchrun_two_processes_match_one(synth_dir, tmp_path):
    common = ["--data-dir", str(synth_dir), "--cache-dir", str(tmp_path / "cache"), "--arch", "resnet18",
              "--crop-size", "32", "--batch-size", "16", "--epochs", "2", "--augment", "none", "--device", "cpu",
              "--workers", "1", "--lr", "1e-3"]
    env = os.environ | {"TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "landmarklib.train", "--run-dir", str(tmp_path / "one")] + common,
                         env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(29500 + os.getpid() % 1000), "-m", "landmarklib.train", "--run-dir", str(tmp_path / "two")]
                         + common, env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _history(tmp_path / "one"), _history(tmp_path / "two")
    assert len(a) == len(b) == 2
    # Same global batches and mean gradient; BatchNorm statistics are per process (8 vs 16 images),
    # so the runs agree closely but not bit for bit.
    for ra, rb in zip(a, b):
        assert float(rb["train_loss"]) == pytest.approx(float(ra["train_loss"]), rel=0.1)
        assert float(rb["val_mse_px"]) == pytest.approx(float(ra["val_mse_px"]), rel=0.15)
    assert np.isfinite([float(r["val_mse_px"]) for r in b]).all()


def test_a_diverging_run_stops_naming_epoch_step_and_lr_and_keeps_the_last_good_checkpoint(synth_dir, tmp_path):
    from landmarklib.errors import DataError
    from landmarklib.train import Diverged
    cfg = _cfg(synth_dir, tmp_path, epochs=2, max_train_steps=2)
    fit(cfg, progress=False)                                           # two good epochs
    good = (tmp_path / "run" / "last.pt").read_bytes()
    from landmarklib import train as train_mod
    real = train_mod.peak_lr
    train_mod.peak_lr = lambda c: 1e4   # resumed for a third epoch with the LR blown up: the loss runs away
    try:
        # the drop at epoch 2 (factor 0.1) makes the blown-up peak 1e4 an LR of 1e3 in epoch 3
        with pytest.raises(Diverged, match=r"diverged at epoch 3 step \d+ \(lr 1\.00e\+03\): .*run/last.pt keeps "
                                           r"epoch 2; lower lr"):
            fit(cfg | {"epochs": 3}, progress=False)
    finally:
        train_mod.peak_lr = real
    assert (tmp_path / "run" / "last.pt").read_bytes() == good and issubclass(Diverged, DataError)
    assert len(_history(tmp_path / "run")) == 2


def test_splits_without_a_validation_image_or_a_full_batch_are_refused_before_anything_is_written(synth_dir,
                                                                                                  tmp_path):
    from landmarklib.errors import DataError
    with pytest.raises(DataError, match=r"landmarks.csv: val_fraction 0.005 of 60 rows leaves no validation image; "
                                        r"give val_fraction 0.017 or more"):
        fit(_cfg(synth_dir, tmp_path, val_fraction=0.005), progress=False)
    with pytest.raises(DataError, match=r"48 training rows .* fewer than one batch of 64; lower batch_size"):
        fit(_cfg(synth_dir, tmp_path, batch_size=64), progress=False)
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_blocklist_flags_take_the_words_people_write_or_name_the_row(tmp_path):
    from landmarklib.errors import DataError
    bl = tmp_path / "bl.csv"
    bl.write_text("file_name,flagged\na.jpg,yes\nb.jpg,no\nc.jpg, On \nd.jpg,0\ne.jpg,TRUE\n")
    assert read_blocklist(bl) == {"a.jpg", "c.jpg", "e.jpg"}
    for cell, shown in (("maybe", "'maybe'"), ("", "''")):
        bl.write_text(f"file_name,flagged\na.jpg,true\nb.jpg,{cell}\n")
        with pytest.raises(DataError, match=rf"bl.csv:3: flagged is {shown}; write true or false"):
            read_blocklist(bl)
