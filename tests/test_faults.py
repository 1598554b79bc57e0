"""Every bad input and every fault: one line naming the file (and line), exit 2, no traceback, and
nothing already written is lost."""
import errno
import os
import re
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

import landmarklib.atomic as atomic_mod
import landmarklib.cache as cache_mod
import landmarklib.checkpoint as checkpoint_mod
from landmarklib import csvfiles, data, eda, predict, score, submission, synth, train
from landmarklib.cache import build_cache
from landmarklib.data import load_split
from landmarklib.errors import DataError
from landmarklib.submission import write_submission
from landmarklib.train import fit

TINY = ["--arch", "resnet18", "--crop-size", "32", "--batch-size", "8", "--device", "cpu", "--workers", "1",
        "--max-train-steps", "1"]


def _cli(main, args, capsys):
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def _train_args(data_dir, tmp_path, *extra, run="run"):
    return ["--data-dir", data_dir, "--cache-dir", tmp_path / "cache", "--run-dir", tmp_path / run, *TINY,
            "--epochs", "2", *extra]


def _lines(path):
    return path.read_bytes().split(b"\n")


def _rewrite_line(path, i, fn):
    lines = _lines(path)
    lines[i] = fn(lines[i])
    path.write_bytes(b"\n".join(lines))


# --- data lost or overwritten -------------------------------------------------------------------

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
    assert _cli(train.main, _train_args(synth_dir, tmp_path), capsys)[0] == 0
    (tmp_path / "run" / "last.pt").unlink()
    best = (tmp_path / "run" / "best.pt").read_bytes()
    rc, err = _cli(train.main, _train_args(synth_dir, tmp_path, "--lr", "0.01"), capsys)
    assert rc == 2 and "holds a run with another recipe (lr: 0.002 there vs 0.01 now)" in err
    assert (tmp_path / "run" / "best.pt").read_bytes() == best


@pytest.mark.parametrize("other, differs", [
    (["--loss", "l1"], "loss: 'l1' in last.pt vs 'smoothl1' in config.json"),
    (["--arch", "resnet34"], "arch: 'resnet34' in last.pt vs 'resnet18' in config.json"),
])
def test_a_last_pt_copied_from_another_run_is_refused_naming_both(synth_dir, tmp_path, capsys, other, differs):
    """Today's run stopped after epoch 1; a last.pt from another recipe (or arch) copied over its own
    would resume silently (mixing two recipes in one history) or end in a load_state_dict traceback."""
    assert _cli(train.main, _train_args(synth_dir, tmp_path, "--epochs", "1"), capsys)[0] == 0
    assert _cli(train.main, _train_args(synth_dir, tmp_path, "--epochs", "1", *other, run="other"), capsys)[0] == 0
    shutil.copy(tmp_path / "other" / "last.pt", tmp_path / "run" / "last.pt")
    history = (tmp_path / "run" / "history.csv").read_bytes()
    rc, err = _cli(train.main, _train_args(synth_dir, tmp_path), capsys)
    assert rc == 2 and err.count("\n") == 1
    assert f"{tmp_path / 'run' / 'last.pt'}: holds another run than {tmp_path / 'run' / 'config.json'}" in err
    assert differs in err
    assert (tmp_path / "run" / "history.csv").read_bytes() == history


@pytest.mark.parametrize("damage", [
    lambda c: (c / "manifest.json").write_text("{not json"),
    lambda c: (c / "images.npy").write_bytes((c / "images.npy").read_bytes()[:5000]),
    lambda c: (c / "affine.npy").write_bytes((c / "affine.npy").read_bytes()[:100]),
    lambda c: (c / "done.npy").unlink(),
    lambda c: (c / "names.json").unlink(),
    lambda c: (c / "landmarks.npy").unlink(),
], ids=["manifest", "images", "affine", "done", "names", "landmarks"])
def test_a_damaged_cache_is_detected_and_rebuilt(synth_dir, tmp_path, damage, capsys):
    clean = build_cache(synth_dir, "train", tmp_path, crop_size=32, workers=1, progress=False)
    reference = {k: np.array(getattr(clean, k)) for k in ("images", "affine", "sizes", "landmarks")}
    damage(clean.path)
    again = build_cache(synth_dir, "train", tmp_path, crop_size=32, workers=1, progress=False)
    for k, v in reference.items():
        np.testing.assert_array_equal(getattr(again, k), v)
    assert list(again.names) == list(clean.names)


def test_any_valid_file_name_round_trips(synth_copy, tmp_path):
    csv = synth_copy / "train" / "landmarks.csv"
    lines = csv.read_text().splitlines(keepends=True)
    old = lines[3].split("\t", 1)[0]
    (synth_copy / "train" / "images" / old).rename(synth_copy / "train" / "images" / "a face  with spaces.jpg")
    lines[3] = "a face  with spaces.jpg\t" + lines[3].split("\t", 1)[1]
    csv.write_text("".join(lines))
    data.check(synth_copy, workers=1)
    c = build_cache(synth_copy, "train", tmp_path, crop_size=32, workers=1, progress=False)
    assert c.names[2] == "a face  with spaces.jpg" and len(c.names) == 60


# --- accepted although wrong --------------------------------------------------------------------

def test_a_submission_of_booleans_is_refused(synth_dir, tmp_path, capsys):
    t = load_split(synth_dir, "test")
    p = write_submission(tmp_path / "s.csv", t.names, t.landmarks, t.indices)
    df = pd.read_csv(p)
    df["Point_M3_Y"] = df["Point_M3_Y"] > 100
    df.to_csv(p, index=False)
    for main in (submission.main, score.main):
        args = (["check"] if main is submission.main else []) + [p, "--data-dir", synth_dir]
        rc, err = _cli(main, args, capsys)
        assert rc == 2 and "s.csv:2: column 'Point_M3_Y' holds true/false, not pixel coordinates" in err


@pytest.mark.parametrize("folds", [0, 1])
def test_eda_needs_two_folds(synth_dir, tmp_path, folds, capsys):
    rc, err = _cli(eda.main, ["--data-dir", synth_dir, "--out", tmp_path / "b.csv", "--folds", folds, "--epochs", 1,
                              "--crop-size", 32, "--device", "cpu"], capsys)
    assert rc == 2 and f"folds: out-of-fold predictions need at least 2 folds, got {folds}" in err
    assert not (tmp_path / "b.csv").exists()


def test_nan_annotation_scores_are_an_error(synth_dir, monkeypatch):
    monkeypatch.setattr(eda, "shape_scores", lambda lm: np.full(len(lm), np.nan))
    with pytest.raises(DataError, match=r"landmarks.csv:2: annotation score is not a number \(60 row"):
        eda.score_annotations(synth_dir, use_model=False)


def _set_coordinate(root, row, value):
    _rewrite_line(root / "train" / "landmarks.csv", row, lambda b: b.replace(b"\t", b"\t" + value + b"\t", 1)
                  .rsplit(b"\t", 1)[0])


@pytest.mark.parametrize("breakage, message", [
    (lambda r: _set_coordinate(r, 4, b"1e30"), r"landmarks.csv:5: point 0 at \(1e\+30, .*\) lies more than 10 image sizes"),
    (lambda r: _set_coordinate(r, 4, b"-9999"), r"landmarks.csv:5: point 0 at \(-9999, .*\) lies more than 10"),
    (lambda r: _tiny_image(r, 6, (1, 1)), r"landmarks.csv:7: image '.*' is 1x1 px, too small to hold a face"),
    (lambda r: _tiny_image(r, 6, (1, 2000)), r"landmarks.csv:7: image '.*' is 1x2000 px, too small"),
    (lambda r: _truncate_image(r, 8), r"\.jpg: truncated JPEG \(no end-of-image marker\)"),
    (lambda r: _bomb(r, 9), r"\.jpg: image too large to decode safely"),
], ids=["huge", "far-negative", "1x1", "1x2000", "truncated", "bomb"])
def test_data_check_catches_what_training_would_choke_on(synth_copy, breakage, message, capsys):
    breakage(synth_copy)
    rc, err = _cli(data.main, ["check", "--data-dir", synth_copy], capsys)
    assert rc == 2
    assert re.search(message, err), err


def _image_of_row(root, row):
    name = (root / "train" / "landmarks.csv").read_text().splitlines()[row].split("\t", 1)[0]
    return root / "train" / "images" / name


def _tiny_image(root, row, size):
    from PIL import Image
    Image.new("RGB", size, (90, 90, 90)).save(_image_of_row(root, row), "JPEG")


def _truncate_image(root, row):
    p = _image_of_row(root, row)
    p.write_bytes(p.read_bytes()[: p.stat().st_size * 2 // 3])


def _bomb(root, row):
    """A small JPEG whose header claims 60000 x 60000 pixels."""
    p = _image_of_row(root, row)
    b = bytearray(p.read_bytes())
    sof = b.index(b"\xff\xc0")
    b[sof + 5:sof + 9] = (60000).to_bytes(2, "big") * 2
    p.write_bytes(bytes(b))


def test_slightly_outside_points_stay_valid_and_wrong_labels_are_left_to_the_eda(synth_copy):
    _set_coordinate(synth_copy, 4, b"-22")
    report = data.check(synth_copy, workers=1)["train"]
    assert report["rows_with_negative_coordinates"] >= 1 and report["rows_beyond_an_image_size"] == 0
    _set_coordinate(synth_copy, 4, b"-900")             # another image's labels, say: valid input, counted
    assert data.check(synth_copy, workers=1)["train"]["rows_beyond_an_image_size"] == 1


# --- tracebacks and messages without a place ----------------------------------------------------

@pytest.mark.parametrize("breakage, message", [
    (lambda r: _rewrite_line(r / "train" / "landmarks.csv", 3, lambda b: b[:40] + b"\xff\xfe" + b[42:]),
     r"landmarks.csv:4: byte 0xff at column 41 is not UTF-8 text"),
    (lambda r: _rewrite_line(r / "test" / "test_points.csv", 2, lambda b: b"\xe9" + b),
     r"test_points.csv:3: byte 0xe9 at column 1 is not UTF-8"),
    (lambda r: (r / "train" / "landmarks.csv").write_bytes(_lines(r / "train" / "landmarks.csv")[0] + b"\n"),
     r"landmarks.csv: no data rows"),
    (lambda r: _rewrite_line(r / "test" / "test_points.csv", 2, lambda b: b.split(b"\t")[0] + b"\t" + b"[" * 5000 + b"]" * 5000),
     r"test_points.csv:3: point_index_list '\[\[\[.*\.\.\.' is not a list of integers"),
    (lambda r: _rewrite_line(r / "train" / "landmarks.csv", 5, lambda b: b"\n" + b),
     r"landmarks.csv:6: blank line"),
], ids=["utf8-landmarks", "utf8-test-points", "header-only", "nested-list", "blank-line"])
def test_bad_csv_bytes_are_located(synth_copy, breakage, message, capsys):
    breakage(synth_copy)
    rc, err = _cli(data.main, ["check", "--data-dir", synth_copy], capsys)
    assert rc == 2
    assert re.search(message, err), err


def test_a_blank_line_does_not_shift_later_line_numbers(synth_copy):
    csv = synth_copy / "train" / "landmarks.csv"
    lines = csv.read_text().splitlines(keepends=True)
    f = lines[10].split("\t")
    f[5] = "x7"
    lines[10] = "\t".join(f)
    lines.insert(3, "\n")                                 # the bad value is now on line 12
    csv.write_text("".join(lines))
    with pytest.raises(DataError, match=r"landmarks.csv:12: column 'Point_2_X' is 'x7', not a number"):
        csvfiles.read_landmarks(csv)
    del lines[3]
    lines.insert(20, "\n")                                # a blank line after the bad value
    csv.write_text("".join(lines))
    with pytest.raises(DataError, match=r"landmarks.csv:11: column 'Point_2_X' is 'x7', not a number"):
        csvfiles.read_landmarks(csv)


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
    rc, err = _cli(predict.main, ["--data-dir", synth_dir, "--checkpoint", bad, "--out", tmp_path / "s.csv",
                                  "--cache-dir", trained / "cache", "--device", "cpu"], capsys)
    assert rc == 2 and f"{bad}: {message}" in err
    assert not (tmp_path / "s.csv").exists()


def test_a_truncated_last_pt_is_named_on_resume(synth_dir, trained, tmp_path, capsys):
    shutil.copytree(trained / "run", tmp_path / "run")
    _bad_checkpoint("truncated", trained / "run" / "last.pt", tmp_path / "run" / "last.pt")
    rc, err = _cli(train.main, ["--data-dir", synth_dir, "--cache-dir", trained / "cache", "--run-dir", tmp_path / "run",
                                *TINY, "--epochs", "2"], capsys)
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
    rc, err = _cli(train.main, ["--data-dir", synth_dir, "--cache-dir", trained / "cache", "--run-dir", run, *TINY,
                                "--epochs", "2", *extra], capsys)
    assert rc == 2 and message in err, err
    if config_before is not None:
        assert (run / "config.json").read_bytes() == config_before


@pytest.mark.parametrize("args, message", [
    (["--n-train", "0"], "--n-train must be at least 10 (got 0)"),
    (["--n-train", "-5"], "--n-train must be at least 10 (got -5)"),
    (["--seed", "-1"], "--seed 0 or more (got -1)"),
])
def test_synth_numeric_arguments(tmp_path, args, message, capsys):
    rc, err = _cli(synth.main, [tmp_path / "d", *args], capsys)
    assert rc == 2 and message in err and not (tmp_path / "d").exists()


@pytest.mark.parametrize("where", ["folder", "under-a-file"])
def test_output_locations_are_checked_before_the_work(synth_dir, trained, tmp_path, where, capsys):
    out = tmp_path if where == "folder" else tmp_path / "f.txt" / "s.csv"
    (tmp_path / "f.txt").write_text("x")
    for main, args in [(predict.main, ["--data-dir", synth_dir, "--checkpoint", trained / "run" / "best.pt",
                                       "--cache-dir", trained / "cache", "--device", "cpu", "--out", out]),
                       (eda.main, ["--data-dir", synth_dir, "--no-model", "--out", out])]:
        rc, err = _cli(main, args, capsys)
        assert rc == 2 and ("is a folder; give a file name" in err if where == "folder" else "f.txt: is a file" in err)


# --- a full disk --------------------------------------------------------------------------------

def _enospc(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


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
            _enospc()
        return real(obj, f, *a, **k)
    monkeypatch.setattr(checkpoint_mod.torch, "save", fills_the_disk)
    rc, err = _cli(train.main, args, capsys)
    last = tmp_path / "run" / "last.pt"
    assert rc == 2 and "no space left on the device" in err and str(tmp_path / "run") in err
    after_failure = last.read_bytes()
    assert torch.load(last, weights_only=True)["epoch"] == 1 and not list((tmp_path / "run").glob("*.tmp"))
    monkeypatch.setattr(checkpoint_mod.torch, "save", real)
    assert _cli(train.main, args, capsys)[0] == 0                 # space freed: the rerun resumes and finishes
    assert torch.load(last, weights_only=True)["epoch"] == 3 and last.read_bytes() != after_failure


def test_a_full_disk_during_a_cache_build_keeps_the_other_cache(synth_dir, tmp_path, monkeypatch):
    first = build_cache(synth_dir, "train", tmp_path, crop_size=32, workers=1, progress=False)
    before = {p.name: p.read_bytes() for p in first.path.iterdir()}
    monkeypatch.setattr(cache_mod.os, "posix_fallocate", _enospc)
    with pytest.raises(DataError, match=r"train_40_crop: no space left on the device"):
        build_cache(synth_dir, "train", tmp_path, crop_size=40, workers=1, progress=False)
    assert {p.name: p.read_bytes() for p in first.path.iterdir()} == before
    monkeypatch.undo()
    assert build_cache(synth_dir, "train", tmp_path, crop_size=40, workers=1, progress=False).images.shape[1] == 40


def test_a_cache_larger_than_the_free_space_is_refused_up_front(synth_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(atomic_mod.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DataError, match=r"the cache needs 0.00 GiB, 0.00 GiB free there"):
        build_cache(synth_dir, "train", tmp_path, crop_size=32, workers=1, progress=False)


def test_a_full_disk_while_writing_a_submission_or_eda_output_keeps_the_old_file(synth_dir, tmp_path, monkeypatch,
                                                                                  capsys):
    t = load_split(synth_dir, "test")
    sub = write_submission(tmp_path / "s.csv", t.names, t.landmarks, t.indices)
    old = sub.read_bytes()
    (tmp_path / "b.csv").write_text("old scores\n")
    monkeypatch.setattr(pd.DataFrame, "to_csv", _enospc)
    with pytest.raises(DataError, match=r"s.csv: no space left on the device"):
        write_submission(sub, t.names, t.landmarks + 1, t.indices)
    rc, err = _cli(eda.main, ["--data-dir", synth_dir, "--no-model", "--out", tmp_path / "b.csv"], capsys)
    assert rc == 2 and "b.csv: no space left on the device" in err
    assert sub.read_bytes() == old and (tmp_path / "b.csv").read_text() == "old scores\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.csv", "s.csv"]
