"""Colab sessions that survive: a disconnect rehearsal, precision per GPU, the device report, no silent
demo data, notebook parameters that mean what they say, and a safe contest zip."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import zip_of
import torch

import landmarklib.train as train_mod
from landmarklib import notebook, runtime
from landmarklib.data import fingerprint
from landmarklib.errors import DataError
from landmarklib.unpack import unpack_contest
from landmarklib.config import notebook_config
from landmarklib.notebook import check_parameters, ensure_data, prepare_data
from landmarklib.synth import main as synth_main
from landmarklib.train import fit

ROOT = Path(__file__).resolve().parents[1]
TINY = {"arch": "resnet18", "crop_size": 32, "batch_size": 8, "device": "cpu", "workers": 1, "epochs": 4,
        "schedule": "drop", "drop_at": [3], "augment": "full", "seed": 2}


def test_disconnect_rehearsal_data_and_cache_gone_run_resumes_exactly(synth_dir, tmp_path, monkeypatch):
    """Train 2 of 4 epochs, lose the local disk (data and cache), rerun from the top: the data comes
    back from the zip on 'Drive', the cache is rebuilt, the run resumes from last.pt, and the
    history equals an uninterrupted run's."""
    drive_zip = zip_of(synth_dir, tmp_path / "drive" / "contest.zip", skip=())
    local = tmp_path / "content"

    def run(run_dir):
        data = prepare_data(str(local / "data"), str(drive_zip))
        return fit(TINY | {"data_dir": str(data), "cache_dir": str(local / "cache"), "run_dir": str(run_dir)},
                   progress=False)

    straight = run(tmp_path / "drive" / "straight")
    real = train_mod.train_one_epoch

    def disconnect_at_epoch_3(*args, **kw):
        if args[5] == 2:
            raise KeyboardInterrupt("runtime disconnected")
        return real(*args, **kw)
    monkeypatch.setattr(train_mod, "train_one_epoch", disconnect_at_epoch_3)
    run_dir = tmp_path / "drive" / "run"
    with pytest.raises(KeyboardInterrupt):
        run(run_dir)
    monkeypatch.setattr(train_mod, "train_one_epoch", real)
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


@pytest.mark.parametrize("capability, amp, expected", [
    ((7, 5), "auto", torch.float16),      # T4: emulated bf16 would be slow
    ((7, 0), "auto", torch.float16),      # V100
    ((8, 0), "auto", torch.bfloat16),     # A100
    ((9, 0), "auto", torch.bfloat16),     # H100 / H200
    ((7, 5), "bf16", torch.bfloat16),     # asked for by name
    ((9, 0), "fp16", torch.float16),
    ((9, 0), "off", None),
    ((9, 0), True, torch.bfloat16),       # configs written before amp took names
    ((7, 5), False, None),
])
def test_precision_follows_the_hardware(monkeypatch, capability, amp, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)   # what a T4 says
    assert runtime.autocast_dtype(torch.device("cuda"), amp) is expected
    assert runtime.autocast_dtype(torch.device("cpu"), amp) is None


def test_device_report_fields(synth_dir, tmp_path):
    r = runtime.device_report(torch.device("cpu"), None, True)
    assert {"device", "name", "memory_gb", "compute_capability", "precision", "memory_format", "torch",
            "torchvision", "cuda", "cpus", "python"} <= set(r)
    assert r["precision"] == "fp32" and r["memory_format"] == "contiguous" and r["cpus"] == os.cpu_count()
    line = runtime.format_device_report(r)
    assert line.startswith("device cpu") and f"torch {torch.__version__}" in line


def test_a_missing_or_misspelt_data_dir_is_an_error_not_demo_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"dtaa: folder not found; give the contest data folder, or zip_path"):
        prepare_data("dtaa")
    assert not (tmp_path / "dtaa").exists()
    (tmp_path / "half" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"half: no contest layout \(missing train/landmarks.csv, train/images"):
        prepare_data("half", demo=None)
    # The default data dir on a fresh clone: the demo set, said loudly and recorded as synthetic.
    made = prepare_data("data", quick=True)
    assert fingerprint(made)["synthetic"] and fingerprint(made)["train_images"] == 120


def test_run_all_refuses_a_misspelt_data_dir(tmp_path):
    out = subprocess.run(["bash", str(ROOT / "run_all.sh")], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=os.environ | {"PYTHON": sys.executable, "DATA_DIR": str(tmp_path / "dtaa"),
                                           "OUT_DIR": str(tmp_path / "out")})
    assert out.returncode == 2
    assert f"DATA_DIR={tmp_path / 'dtaa'}: train/landmarks.csv not found" in out.stderr
    assert not (tmp_path / "dtaa").exists() and not (tmp_path / "out").exists()


def test_synth_never_writes_into_a_folder_that_holds_anything(synth_copy, capsys):
    before = (synth_copy / "train" / "landmarks.csv").read_bytes()
    (synth_copy / "SYNTHETIC.json").unlink()                       # now it looks like a contest folder
    assert synth_main([str(synth_copy), "--n-train", "10", "--n-test", "2"]) == 2
    assert "not empty; the synthetic set is only written into a new or empty folder" in capsys.readouterr().err
    assert (synth_copy / "train" / "landmarks.csv").read_bytes() == before


def test_resume_on_other_data_is_refused(synth_dir, synth_copy, tmp_path):
    cfg = TINY | {"epochs": 2, "cache_dir": str(tmp_path / "cache"), "run_dir": str(tmp_path / "run")}
    fit(cfg | {"data_dir": str(synth_dir), "max_train_steps": 1, "epochs": 1}, progress=False)
    lines = (synth_copy / "train" / "landmarks.csv").read_text().splitlines(keepends=True)
    (synth_copy / "train" / "landmarks.csv").write_text("".join(lines[:1] + lines[2:] + lines[1:2]))
    with pytest.raises(ValueError, match=r"was trained on other data"):
        fit(cfg | {"data_dir": str(synth_copy), "max_train_steps": 1}, progress=False)


def test_notebook_parameters_are_typed_and_named():
    ns = {"data_dir": "d", "pretrained": "false", "epochs": "3", "lr": "2e-3", "quick": "False", "demo": None,
          "In": [], "Path": Path, "REPO_URL": "https://example.invalid", "os": os}
    p = check_parameters("train", ns)
    assert p["epochs"] == 3 and p["lr"] == 2e-3 and p["quick"] is False
    assert notebook_config(p)["pretrained"] is False              # run settings then go through make_config
    with pytest.raises(ValueError, match=r"notebooks/train.ipynb has no parameter\(s\) \['pretraned'\]"):
        check_parameters("train", ns | {"pretraned": "true"})
    with pytest.raises(ValueError, match=r"use_model: 'perhaps' is not true or false"):
        check_parameters("eda_bad_annotations", {"use_model": "perhaps"})
    params, before = notebook.declared_parameters("eda_bad_annotations")
    assert params["folds"] == 4 and "REPO_URL" in before and "root" in before


def test_papermill_refuses_a_misspelt_parameter(tmp_path):
    out = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "train.ipynb"),
                          str(tmp_path / "out.ipynb"), "-k", "python3", "-p", "pretraned", "true",
                          "-p", "data_dir", str(tmp_path / "nodata")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=os.environ | {"TQDM_DISABLE": "1"})
    assert out.returncode != 0
    assert "has no parameter(s) ['pretraned']" in out.stderr + out.stdout


def test_zip_slip_members_are_refused_before_anything_is_written(tmp_path):
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("DATA/train/landmarks.csv", "x")
        zf.writestr("DATA/../../escaped.txt", "owned")
    with pytest.raises(DataError, match=r"evil.zip: member 'DATA/../../escaped.txt' would be written outside"):
        unpack_contest(z, tmp_path / "data", scratch=tmp_path / "scratch")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "data").exists()


def test_a_killed_unpack_is_resumed_and_a_bad_zip_is_named(synth_dir, tmp_path, monkeypatch):
    z = zip_of(synth_dir, tmp_path / "drive" / "contest.zip", skip=())
    data = tmp_path / "data"
    real = shutil.copyfileobj
    calls = []

    def killed(src, dst, *a):
        calls.append(1)
        if len(calls) == 30:
            raise KeyboardInterrupt("killed mid-unpack")
        return real(src, dst, *a)
    monkeypatch.setattr(shutil, "copyfileobj", killed)
    with pytest.raises(KeyboardInterrupt):
        unpack_contest(z, data, scratch=tmp_path / "scratch")
    monkeypatch.setattr(shutil, "copyfileobj", real)
    written = [p for p in data.rglob("*") if p.is_file()]
    assert 0 < len(written) < 80 + 2 and not (data / ".unpacked").exists()    # part of the 84 files
    unpack_contest(z, data, scratch=tmp_path / "scratch")   # the marker, not landmarks.csv, says it is unfinished
    assert (data / ".unpacked").is_file() and not (tmp_path / "scratch" / "contest.zip").exists()
    assert ensure_data(data, z) == data                      # finished: nothing to do
    assert sorted(p.name for p in (data / "train" / "images").iterdir()) == \
        sorted(p.name for p in (synth_dir / "train" / "images").iterdir())
    bad = tmp_path / "truncated.zip"
    bad.write_bytes(z.read_bytes()[: z.stat().st_size // 2])
    with pytest.raises(DataError, match=r"truncated.zip: not a readable zip file"):
        unpack_contest(bad, tmp_path / "other", scratch=tmp_path / "s2")


def test_unpacking_stops_before_a_full_disk_and_footprint_adds_up(synth_dir, tmp_path, monkeypatch):
    import landmarklib.atomic as atomic_mod
    import landmarklib.data as data_mod
    z = zip_of(synth_dir, tmp_path / "drive" / "contest.zip", skip=())
    real = shutil.disk_usage
    monkeypatch.setattr(atomic_mod.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(DataError, match=r"scratch: copying contest.zip needs 0.00 GiB, 0.00 GiB free there"):
        unpack_contest(z, tmp_path / "data", scratch=tmp_path / "scratch")
    assert not (tmp_path / "data").exists()
    monkeypatch.setattr(atomic_mod.shutil, "disk_usage", lambda p: real(p)._replace(
        free=z.stat().st_size + 10 if "scratch" in str(p) else 1000))
    with pytest.raises(DataError, match=r"data: unpacking contest.zip needs .* GiB free there"):
        unpack_contest(z, tmp_path / "data", scratch=tmp_path / "scratch")
    assert not any(p.is_file() for p in (tmp_path / "data").rglob("*"))
    monkeypatch.undo()
    data = unpack_contest(z, tmp_path / "data", scratch=tmp_path / "scratch")
    sizes = data_mod.footprint(data)
    images = sum(p.stat().st_size for p in (data / "train" / "images").iterdir())
    assert sizes["train/images"] == images and sizes["test/images"] > 0 and sizes["csv files"] > 0


def test_a_given_test_points_path_wins_over_the_file_in_a_ready_data_dir(synth_copy, tmp_path, capsys):
    dest = synth_copy / "test" / "test_points.csv"
    given = tmp_path / "tp.csv"
    given.write_bytes(dest.read_bytes().replace(b"\n", b"\r\n"))       # the user's corrected copy
    assert ensure_data(synth_copy, None, given) == synth_copy
    assert dest.read_bytes() == given.read_bytes()
    assert f"using {given} (test_points_path), not the file that was there" in capsys.readouterr().out
    ensure_data(synth_copy, None, given)
    assert capsys.readouterr().out == ""                               # the same file again: nothing to say
