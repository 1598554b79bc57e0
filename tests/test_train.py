"""train.py (the module; the train notebook is tested in e2e/): the training core, resume, locks, bad input."""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import landmarklib.checkpoint as checkpoint_mod
import landmarklib.engine as engine_mod
import landmarklib.models as models
from conftest import TINY_DROP, TINY_ONE_STEP, TINY_RUN, edit_in_place, enospc, peak_bytes, run_cli, zip_of
from landmarklib import eda, predict, train
from landmarklib.atomic import write_json
from landmarklib.cache import _save, compact_labels, open_cache
from landmarklib.csvfiles import read_blocklist
from landmarklib.data import split_indices
from landmarklib.loader import BatchLoader
from landmarklib.notebook import prepare_data
from landmarklib.train import fit, summary


TINY_ARGS = ["--arch", "resnet18", "--crop-size", "32", "--batch-size", "8", "--device", "cpu", "--workers", "1",
        "--max-train-steps", "1"]


def _train_args(data_dir, tmp_path, *extra, run="run"):
    return ["--data-dir", data_dir, "--cache-dir", tmp_path / "cache", "--run-dir", tmp_path / run, *TINY_ARGS,
            "--epochs", "2", *extra]


@pytest.fixture(scope="module")
def trained(synth_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    fit({"data_dir": str(synth_dir), "cache_dir": str(tmp / "cache"), "run_dir": str(tmp / "run"), "arch": "resnet18",
         "crop_size": 32, "batch_size": 8, "device": "cpu", "workers": 1, "epochs": 1, "max_train_steps": 1},
        progress=False)
    return tmp


def _bad_checkpoint(kind, good: Path, out: Path) -> Path:
    ckpt = torch.load(good, weights_only=True)
    if kind == "truncated":
        out.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        return out
    if kind == "bare state dict":
        ckpt = ckpt["model"]
    elif kind == "other arch":
        ckpt["config"]["arch"] = "resnet34"
    elif kind == "nan weights":
        next(v for v in ckpt["model"].values() if v.is_floating_point()).fill_(float("nan"))
    elif kind == "wrong types":
        ckpt["config"] = "resnet18"
    torch.save(ckpt, out)
    return out


def _fake_cache(root, n, rng):
    """A cache folder of n rows with contest-like integer labels and tiny images (the label path is
    what is measured; images are a memory map either way)."""
    root.mkdir()
    np.lib.format.open_memmap(root / "images.npy", "w+", np.uint8, (n, 8, 8, 3)).flush()
    w = rng.integers(150, 1400, n)
    _save(root / "affine.npy", np.stack([128 / w, 128 / w, np.zeros(n), np.zeros(n)], 1))
    _save(root / "sizes.npy", np.stack([w, w], 1).astype(np.int64))
    _save(root / "done.npy", np.ones(n, bool))
    _save(root / "landmarks.npy", compact_labels(rng.integers(-22, 1308, (n, 971, 2)).astype(np.float32)))
    write_json(root / "names.json", [f"{i:032x}.jpg" for i in range(n)])
    (root / "manifest.json").write_text(json.dumps({"size": 128, "mode": "crop"}))
    return root


def _setup(path) -> None:
    """What train_model does with the labels: open the cache, take the targets, the head's mean
    shape over the train split, and a few batches."""
    cache = open_cache(path)
    targets = cache.targets()
    train_idx = np.arange(int(len(cache) * 0.8))
    targets.mean(train_idx, chunk=256)
    for _, (_, t, _) in zip(range(3), BatchLoader(cache.images, targets, train_idx, 64, shuffle=True)):
        assert t.shape == (64, 971, 2)


TINY_RESUME = TINY_RUN | {"epochs": 4, "schedule": "drop", "drop_at": [3], "augment": "full", "seed": 2}


TINY = TINY_RUN | {"lr": 1e-3, "augment": "flip", "schedule": "drop", "drop_at": [2], "epochs": 3}


def _cfg(synth_dir, tmp_path, **kw):
    return TINY | {"data_dir": str(synth_dir), "cache_dir": str(tmp_path / "cache"),
                   "run_dir": str(tmp_path / "run")} | kw


def _history(run_dir):
    with open(Path(run_dir) / "history.csv") as f:
        return list(csv.DictReader(f))


def test_the_summary_line_names_the_best_epoch_and_the_run_dir():
    h = [{"epoch": 1, "val_mse_px": 30.0, "val_mse30_px": 31.0}, {"epoch": 2, "val_mse_px": 12.5, "val_mse30_px": 13.0},
         {"epoch": 3, "val_mse_px": 14.0, "val_mse30_px": 15.0}]
    assert summary(h, "runs/x") == ("best val_mse_px 12.500 (val_mse30_px 13.000) at epoch 2 of 3; "
                                    "last epoch 14.000; best.pt in runs/x")


def test_config_json_records_the_weights_actually_loaded(synth_dir, tmp_path, monkeypatch):
    def run(name, **kw):
        fit(TINY_DROP | {"data_dir": str(synth_dir), "cache_dir": str(tmp_path / "cache"),
                    "run_dir": str(tmp_path / name)} | kw, progress=False)
        return json.loads((tmp_path / name / "config.json").read_text())
    assert run("auto")["weights"] == "none"                      # synthetic data: from scratch
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.warns(UserWarning, match="ImageNet weights for resnet18 unavailable"):
        assert run("offline", pretrained=True)["weights"] == "none"
    import torchvision
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "imagenet.pt")
    weights = run("file", weights_path=str(tmp_path / "imagenet.pt"))["weights"]
    assert weights.startswith("file:imagenet.pt sha1:") and weights.endswith(" backbone 100%")   # all but the 1000-class fc
    assert len(weights.split("sha1:")[1].split()[0]) == 12
    # What ImageNet weights would be recorded as, from the same registry that loads them.
    assert str(torchvision.models.get_model_weights("resnet18").DEFAULT) == "ResNet18_Weights.IMAGENET1K_V1"


def test_compile_failure_falls_back_and_says_so(synth_dir, tmp_path, monkeypatch, capsys):
    def broken(model, *a, **k):
        raise RuntimeError("no C++ compiler")
    monkeypatch.setattr(torch, "compile", broken)
    cfg = TINY_DROP | {"data_dir": str(synth_dir), "cache_dir": str(tmp_path / "cache"), "compile": True}
    h = fit(cfg | {"run_dir": str(tmp_path / "a")}, progress=False)
    assert "torch.compile failed (RuntimeError: no C++ compiler); training uncompiled" in capsys.readouterr().err
    assert len(h) == 2 and np.isfinite(h[-1]["val_mse_px"])
    compiled = []

    def spy(model, *a, **k):          # a compile that works: the loop runs through what it returned
        compiled.append(model)
        return model
    monkeypatch.setattr(torch, "compile", spy)
    assert fit(cfg | {"run_dir": str(tmp_path / "b")}, progress=False)[-1]["epoch"] == 2
    assert len(compiled) == 1 and isinstance(compiled[0], models.LandmarkRegressor)


@pytest.mark.slow
def test_a_second_training_on_a_busy_run_dir_is_refused_and_the_first_is_intact(synth_dir, tmp_path):
    args = [sys.executable, "-m", "landmarklib.train", *map(str, _train_args(synth_dir, tmp_path))]
    args[args.index("--max-train-steps") + 1] = "4"
    args[args.index("--epochs") + 1] = "4"
    env = os.environ | {"TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "run" / ".lock"
    deadline = time.time() + 120
    while time.time() < deadline and not (lock.is_file() and "process" in lock.read_text()):
        time.sleep(0.05)
    second = subprocess.run(args, env=env, capture_output=True, text=True)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert f"{tmp_path / 'run'}: in use by process {first.pid}" in second.stderr
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3, 4]
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"] == 4


@pytest.mark.slow
def test_the_lock_dies_with_its_process(synth_dir, tmp_path):
    args = [sys.executable, "-m", "landmarklib.train", *map(str, _train_args(synth_dir, tmp_path))]
    args[args.index("--max-train-steps") + 1] = "50"
    args[args.index("--epochs") + 1] = "50"
    killed = subprocess.Popen(args, env=os.environ | {"TQDM_DISABLE": "1"}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    lock = tmp_path / "run" / ".lock"
    deadline = time.time() + 120
    while time.time() < deadline and not (lock.is_file() and "process" in lock.read_text()):
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)                     # a Colab disconnect: no cleanup runs
    killed.wait()
    args[args.index("--epochs") + 1] = "1"
    args[args.index("--max-train-steps") + 1] = "1"
    h = fit({"data_dir": str(synth_dir), "cache_dir": str(tmp_path / "cache"), "run_dir": str(tmp_path / "again"),
             "arch": "resnet18", "crop_size": 32, "batch_size": 8, "device": "cpu", "workers": 1, "epochs": 1,
             "max_train_steps": 1}, progress=False)
    assert h  # another run is not disturbed; and the killed run dir can be taken over:
    with train.run_lock(tmp_path / "run"):
        pass


def test_a_run_dir_without_last_pt_still_refuses_another_recipe(synth_dir, tmp_path, capsys):
    assert run_cli(train.main, _train_args(synth_dir, tmp_path), capsys)[0] == 0
    (tmp_path / "run" / "last.pt").unlink()
    best = (tmp_path / "run" / "best.pt").read_bytes()
    rc, err = run_cli(train.main, _train_args(synth_dir, tmp_path, "--lr", "0.01"), capsys)
    assert rc == 2 and "holds a run with another recipe (lr: 0.002 there vs 0.01 now)" in err
    assert (tmp_path / "run" / "best.pt").read_bytes() == best


@pytest.mark.slow
@pytest.mark.parametrize("other, differs", [
    (["--loss", "l1"], "loss: 'l1' in last.pt vs 'smoothl1' in config.json"),
    (["--arch", "resnet34"], "arch: 'resnet34' in last.pt vs 'resnet18' in config.json"),
])
def test_a_last_pt_copied_from_another_run_is_refused_naming_both(synth_dir, tmp_path, capsys, other, differs):
    """Today's run stopped after epoch 1; a last.pt from another recipe (or arch) copied over its own
    would resume silently (mixing two recipes in one history) or end in a load_state_dict traceback."""
    assert run_cli(train.main, _train_args(synth_dir, tmp_path, "--epochs", "1"), capsys)[0] == 0
    assert run_cli(train.main, _train_args(synth_dir, tmp_path, "--epochs", "1", *other, run="other"), capsys)[0] == 0
    shutil.copy(tmp_path / "other" / "last.pt", tmp_path / "run" / "last.pt")
    history = (tmp_path / "run" / "history.csv").read_bytes()
    rc, err = run_cli(train.main, _train_args(synth_dir, tmp_path), capsys)
    assert rc == 2 and err.count("\n") == 1
    assert f"{tmp_path / 'run' / 'last.pt'}: holds another run than {tmp_path / 'run' / 'config.json'}" in err
    assert differs in err
    assert (tmp_path / "run" / "history.csv").read_bytes() == history


@pytest.mark.parametrize("kind, message", [
    ("truncated", "not a readable checkpoint, truncated or corrupt"),
    ("bare state dict", "a bare state dict, not a landmarklib checkpoint"),
    ("other arch", "its weights do not fit its config's arch 'resnet34'"),
    ("nan weights", "weights hold NaN or inf"),
    ("wrong types", "malformed checkpoint"),
    ("missing", "checkpoint not found"),
])
def test_bad_checkpoints_are_named(synth_dir, trained, tmp_path, kind, message, capsys):
    bad = tmp_path / "bad.pt"
    if kind != "missing":
        _bad_checkpoint(kind, trained / "run" / "best.pt", bad)
    rc, err = run_cli(predict.main, ["--data-dir", synth_dir, "--checkpoint", bad, "--out", tmp_path / "s.csv",
                                  "--cache-dir", trained / "cache", "--device", "cpu"], capsys)
    assert rc == 2 and f"{bad}: {message}" in err
    assert not (tmp_path / "s.csv").exists()


def test_a_truncated_last_pt_is_named_on_resume(synth_dir, trained, tmp_path, capsys):
    shutil.copytree(trained / "run", tmp_path / "run")
    _bad_checkpoint("truncated", trained / "run" / "last.pt", tmp_path / "run" / "last.pt")
    rc, err = run_cli(train.main, ["--data-dir", synth_dir, "--cache-dir", trained / "cache", "--run-dir", tmp_path / "run",
                                *TINY_ARGS, "--epochs", "2"], capsys)
    assert rc == 2 and "last.pt: not a readable checkpoint" in err


@pytest.mark.parametrize("setup, extra, message", [
    (None, ["--weights-path", "nowhere.pt"], "nowhere.pt: weights file not found"),
    ("config-corrupt", [], "config.json: unreadable"),
    ("config-missing", [], "holds checkpoints but no config.json"),
    ("blocklist-binary", ["--blocklist", "BL"], "bl.csv:1: byte 0x89"),
    ("blocklist-empty", ["--blocklist", "BL"], "bl.csv: empty blocklist"),
    (None, ["--batch-size", "0"], "batch_size: 0 is out of range; it takes an integer in [1, 65536]"),
    (None, ["--val-fraction", "0"], "val_fraction: 0.0 is out of range; it takes a finite number in (0, 1)"),
    (None, ["--seed", "-1"], "seed: -1 is out of range"),
    (None, ["--device", "cuda"], "device: 'cuda' asked for, but this machine has no usable CUDA GPU"),
    ("run-dir-is-a-file", [], "is a file, not a folder"),
])
def test_train_cli_bad_input_is_one_line(synth_dir, trained, tmp_path, setup, extra, message, capsys):
    if torch.cuda.is_available() and "cuda" in extra:
        pytest.skip("this machine has a GPU")
    run = tmp_path / "run"
    if setup and setup.startswith("config"):
        shutil.copytree(trained / "run", run)
        if setup == "config-corrupt":
            (run / "config.json").write_text('{"arch": "resnet18", ')
        else:
            (run / "config.json").unlink()
    if setup == "blocklist-binary":
        (tmp_path / "bl.csv").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    if setup == "blocklist-empty":
        (tmp_path / "bl.csv").write_bytes(b"")
    if setup == "run-dir-is-a-file":
        run = tmp_path / "file"
        run.write_text("x")
        run = run / "run"
    extra = [str(tmp_path / "bl.csv") if e == "BL" else e for e in extra]
    config_before = (run / "config.json").read_bytes() if (run / "config.json").is_file() else None
    rc, err = run_cli(train.main, ["--data-dir", synth_dir, "--cache-dir", trained / "cache", "--run-dir", run, *TINY_ARGS,
                                "--epochs", "2", *extra], capsys)
    assert rc == 2 and message in err, err
    if config_before is not None:
        assert (run / "config.json").read_bytes() == config_before


@pytest.mark.parametrize("where", ["folder", "under-a-file"])
def test_output_locations_are_checked_before_the_work(synth_dir, trained, tmp_path, where, capsys):
    out = tmp_path if where == "folder" else tmp_path / "f.txt" / "s.csv"
    (tmp_path / "f.txt").write_text("x")
    for main, args in [(predict.main, ["--data-dir", synth_dir, "--checkpoint", trained / "run" / "best.pt",
                                       "--cache-dir", trained / "cache", "--device", "cpu", "--out", out]),
                       (eda.main, ["--data-dir", synth_dir, "--no-model", "--out", out])]:
        rc, err = run_cli(main, args, capsys)
        assert rc == 2 and ("is a folder; give a file name" in err if where == "folder" else "f.txt: is a file" in err)


def test_a_full_disk_mid_run_keeps_the_last_checkpoint_and_the_rerun_completes(synth_dir, tmp_path, monkeypatch,
                                                                                capsys):
    args = _train_args(synth_dir, tmp_path)
    args[args.index("--epochs") + 1] = "3"
    real = torch.save
    saves = []

    def fills_the_disk(obj, f, *a, **k):     # writes half a checkpoint, then the disk is full
        saves.append(f)
        if len(saves) == 3:                  # epoch 2's best.pt / last.pt
            Path(f).write_bytes(b"half")
            enospc()
        return real(obj, f, *a, **k)
    monkeypatch.setattr(checkpoint_mod.torch, "save", fills_the_disk)
    rc, err = run_cli(train.main, args, capsys)
    last = tmp_path / "run" / "last.pt"
    assert rc == 2 and "no space left on the device" in err and str(tmp_path / "run") in err
    after_failure = last.read_bytes()
    assert torch.load(last, weights_only=True)["epoch"] == 1 and not list((tmp_path / "run").glob("*.tmp"))
    monkeypatch.setattr(checkpoint_mod.torch, "save", real)
    assert run_cli(train.main, args, capsys)[0] == 0                 # space freed: the rerun resumes and finishes
    assert torch.load(last, weights_only=True)["epoch"] == 3 and last.read_bytes() != after_failure


def test_training_setup_grows_by_its_index_arrays_only(tmp_path):
    """Per image, the setup may hold its affine (32 bytes), size (16), name (128 as numpy text, more
    while names.json is parsed) and done flag, and nothing more: the labels (971 x 2 int16) are
    paged in from landmarks.npy, a batch at a time, and no float copy of them is made (7.8 kB each
    in float32, 15.5 kB in float64). Measured as the slope between 1,000 and 4,000 images, so
    constant costs (a chunk, a batch) cancel. Before per-batch encoding, Cache.targets() made this
    about 50 kB per image; with the labels read into memory it was 3.9 kB."""
    rng = np.random.default_rng(0)
    small, large = (peak_bytes(lambda: _setup(path)) for path in [_fake_cache(tmp_path / "small", 1000, rng),
                                                             _fake_cache(tmp_path / "large", 4000, rng)])
    per_image = (large - small) / 3000
    assert per_image < 1000, per_image


@pytest.mark.slow
def test_disconnect_rehearsal_data_and_cache_gone_run_resumes_exactly(synth_dir, tmp_path, monkeypatch):
    """Train 2 of 4 epochs, lose the local disk (data and cache), rerun from the top: the data comes
    back from the zip on 'Drive', the cache is rebuilt, the run resumes from last.pt, and the
    history equals an uninterrupted run's."""
    drive_zip = zip_of(synth_dir, tmp_path / "drive" / "contest.zip", skip=())
    local = tmp_path / "content"

    def run(run_dir):
        data = prepare_data(str(local / "data"), str(drive_zip))
        return fit(TINY_RESUME | {"data_dir": str(data), "cache_dir": str(local / "cache"), "run_dir": str(run_dir)},
                   progress=False)

    straight = run(tmp_path / "drive" / "straight")
    real = engine_mod.train_one_epoch

    def disconnect_at_epoch_3(*args, **kw):
        if args[5] == 2:
            raise KeyboardInterrupt("runtime disconnected")
        return real(*args, **kw)
    monkeypatch.setattr(engine_mod, "train_one_epoch", disconnect_at_epoch_3)
    run_dir = tmp_path / "drive" / "run"
    with pytest.raises(KeyboardInterrupt):
        run(run_dir)
    monkeypatch.setattr(engine_mod, "train_one_epoch", real)
    assert len(torch.load(run_dir / "last.pt", weights_only=True)["history"]) == 2
    shutil.rmtree(local)                                       # the runtime is recycled: /content is gone
    resumed = run(run_dir)
    assert [h["epoch"] for h in resumed] == [1, 2, 3, 4]
    for a, b in zip(straight, resumed):
        for k in ("lr", "train_loss", "val_mse_px", "val_mse30_px"):
            assert b[k] == pytest.approx(a[k], rel=1e-6), k
    best = torch.load(run_dir / "best.pt", weights_only=True)
    assert "optimizer" not in best and {"model", "config"} <= set(best)    # lean: what predict needs
    assert "optimizer" in torch.load(run_dir / "last.pt", weights_only=True)
    starts = json.loads((run_dir / "device.json").read_text())
    assert [s["epoch"] for s in starts] == [0, 2]                         # one report per start


def test_resume_on_other_data_is_refused(synth_dir, synth_copy, tmp_path):
    cfg = TINY_RESUME | {"epochs": 2, "cache_dir": str(tmp_path / "cache"), "run_dir": str(tmp_path / "run")}
    fit(cfg | {"data_dir": str(synth_dir), "max_train_steps": 1, "epochs": 1}, progress=False)
    lines = (synth_copy / "train" / "landmarks.csv").read_text().splitlines(keepends=True)
    (synth_copy / "train" / "landmarks.csv").write_text("".join(lines[:1] + lines[2:] + lines[1:2]))
    with pytest.raises(ValueError, match=r"was trained on other data"):
        fit(cfg | {"data_dir": str(synth_copy), "max_train_steps": 1}, progress=False)


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
    from landmarklib.engine import Diverged
    cfg = _cfg(synth_dir, tmp_path, epochs=2, max_train_steps=2)
    fit(cfg, progress=False)                                           # two good epochs
    good = (tmp_path / "run" / "last.pt").read_bytes()
    real = engine_mod.peak_lr
    engine_mod.peak_lr = lambda c: 1e4   # resumed for a third epoch with the LR blown up: the loss runs away
    try:
        # the drop at epoch 2 (factor 0.1) makes the blown-up peak 1e4 an LR of 1e3 in epoch 3
        with pytest.raises(Diverged, match=r"diverged at epoch 3 step \d+ \(lr 1\.00e\+03\): .*run/last.pt keeps "
                                           r"epoch 2; lower lr"):
            fit(cfg | {"epochs": 3}, progress=False)
    finally:
        engine_mod.peak_lr = real
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


def test_a_run_does_not_resume_on_data_edited_in_place(synth_copy, tmp_path):
    cfg = TINY_ONE_STEP | {"data_dir": str(synth_copy), "cache_dir": str(tmp_path / "cache"), "run_dir": str(tmp_path / "run")}
    fit(cfg, progress=False)
    edit_in_place(synth_copy / "train" / "landmarks.csv", row=30)
    with pytest.raises(ValueError, match="was trained on other data"):
        fit(cfg | {"epochs": 2}, progress=False)


def test_a_run_recorded_before_the_content_hash_still_resumes(synth_dir, tmp_path):
    cfg = TINY_ONE_STEP | {"data_dir": str(synth_dir), "cache_dir": str(tmp_path / "cache"), "run_dir": str(tmp_path / "run")}
    fit(cfg, progress=False)
    config = tmp_path / "run" / "config.json"
    saved = json.loads(config.read_text())
    saved["data"] = {"landmarks_csv": "123:abc", **{k: v for k, v in saved["data"].items() if "sha256" not in k}}
    config.write_text(json.dumps(saved))
    assert len(fit(cfg | {"epochs": 2}, progress=False)) == 2


@pytest.mark.slow
@pytest.mark.parametrize("content", ["", "{\"device\": \"cpu\"}", "[1, 2"], ids=["empty", "object", "half"])
def test_an_unreadable_device_json_is_kept_aside_and_the_run_goes_on(synth_dir, tmp_path, content, capsys):
    cfg = TINY_ONE_STEP | {"data_dir": str(synth_dir), "cache_dir": str(tmp_path / "cache"), "run_dir": str(tmp_path / "run")}
    fit(cfg, progress=False)
    (tmp_path / "run" / "device.json").write_text(content)
    assert len(fit(cfg | {"epochs": 2}, progress=False)) == 2
    starts = json.loads((tmp_path / "run" / "device.json").read_text())
    assert len(starts) == 1 and starts[0]["epoch"] == 1
    assert (tmp_path / "run" / "device.json.unreadable").read_text() == content
    assert "device.json: " in capsys.readouterr().out
