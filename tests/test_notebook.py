"""notebook.py: each notebook's parameters and data (Drive, the zip, the demo set)."""
import os
import shutil
from pathlib import Path

import pytest

import landmarklib.cache as cache_mod
import landmarklib.data as data_mod
import landmarklib.eda as eda_mod
from landmarklib import colab, config, notebook
from landmarklib.config import make_config, notebook_config, resolve_run_dir
from landmarklib.data import fingerprint
from landmarklib.errors import DataError
from landmarklib.notebook import check_parameters, ensure_data, prepare_data


def _drive(monkeypatch, tmp_path, zips=()):
    home = tmp_path / "drive" / "MyDrive" / "landmarklib"
    home.mkdir(parents=True)
    monkeypatch.setattr(colab, "DRIVE", tmp_path / "drive")
    monkeypatch.setattr(colab, "MY_DRIVE", tmp_path / "drive" / "MyDrive")
    monkeypatch.setattr(colab, "DRIVE_HOME", home)
    for name in zips:
        (home / name).write_bytes(b"PK")
    return home


def _count_parses(monkeypatch) -> list:
    """The folder of each landmarks.csv read_landmarks parses from here on."""
    calls = []
    real = data_mod.read_landmarks

    def counting(path):
        calls.append(Path(path).parent.name)
        return real(path)
    monkeypatch.setattr(data_mod, "read_landmarks", counting)
    return calls


def test_a_zip_on_an_unmounted_drive_is_said_before_anything_else(monkeypatch, tmp_path):
    monkeypatch.setattr(colab, "DRIVE", tmp_path / "drive")
    monkeypatch.setattr(colab, "MY_DRIVE", tmp_path / "drive" / "MyDrive")
    with pytest.raises(DataError, match=r"zip_path .*contest.zip is on Google Drive, which is not mounted"):
        notebook.prepare_data(str(tmp_path / "data"), str(tmp_path / "drive" / "MyDrive" / "contest.zip"))
    assert not (tmp_path / "data").exists()


def test_the_contest_zip_is_found_in_mydrive_landmarklib(synth_dir, tmp_path, monkeypatch, capsys):
    home = _drive(monkeypatch, tmp_path)
    shutil.make_archive(str(home / "contest"), "zip", synth_dir.parent, synth_dir.name)
    d = notebook.prepare_data(str(tmp_path / "data"))                 # no zip_path: a mounted Drive's convention
    assert (d / "train" / "landmarks.csv").is_file()
    assert f"zip_path: {home / 'contest.zip'} (the one .zip in {home})" in capsys.readouterr().out
    # the data is there now: a rerun needs no zip, and a given data set is never searched for
    (home / "contest.zip").unlink()
    assert notebook.prepare_data(str(tmp_path / "data")) == d


@pytest.mark.parametrize("zips, message", [
    ((), r"no contest zip in .*MyDrive/landmarklib: put it there \(with test_points.csv beside it .*or demo=True"),
    (("a.zip", "b.zip"), r"MyDrive/landmarklib holds 2 zips \(a.zip, b.zip\); give zip_path, the one to use"),
])
def test_no_zip_or_several_on_drive_say_what_to_do_in_one_line(tmp_path, monkeypatch, zips, message):
    _drive(monkeypatch, tmp_path, zips)
    with pytest.raises(DataError, match=message):
        notebook.prepare_data(str(tmp_path / "data"))
    assert not (tmp_path / "data").exists()
    notebook.prepare_data(str(tmp_path / "data"), demo=True, quick=True)     # asked for: the demo set, no search


def test_a_demo_run_says_demo_in_its_folder_name(synth_dir, tmp_path):
    (tmp_path / "contest" / "train").mkdir(parents=True)
    same = {"lr": 1e-3}   # one recipe (by default the LR differs: ImageNet weights on the contest data)
    demo = resolve_run_dir(make_config({"data_dir": str(synth_dir)} | same), tmp_path)["run_dir"]
    contest = resolve_run_dir(make_config({"data_dir": str(tmp_path / "contest")} | same), tmp_path)["run_dir"]
    assert Path(demo).name == "demo_" + Path(contest).name


def test_the_data_stage_parses_each_csv_once(synth_dir, tmp_path, monkeypatch):
    calls = _count_parses(monkeypatch)
    report, caches = cache_mod.check_and_build(synth_dir, tmp_path / "cache", 32, "crop", workers=1, progress=False)
    assert calls == ["train", "test"]                     # test/landmarks.csv: the demo set's ground truth
    assert report["train"]["images"] == len(caches["train"]) == 60 and caches["test"].landmarks is not None


def test_the_eda_stage_parses_landmarks_csv_once_on_a_fresh_runtime(synth_dir, tmp_path, monkeypatch):
    """Each notebook runs on its own runtime: the EDA finds no cache there. Its one parse builds the
    out-of-fold models' cache too, whose sizes replace a pass over the image headers."""
    calls = _count_parses(monkeypatch)
    monkeypatch.setattr(eda_mod, "image_sizes", lambda *a, **k: pytest.fail("image headers read again"))
    df = eda_mod.score_annotations(synth_dir, folds=2, epochs=1, crop_size=32, device="cpu", max_train_steps=1,
                                   cache_dir=tmp_path / "fresh", progress=False)
    assert calls == ["train"] and len(df) == 60


def test_notebook_config_takes_only_config_keys_and_the_quick_profile():
    cfg = notebook_config({"arch": "resnet34", "quick": True, "plt": object(), "epochs": 9}, quick=True)
    run = ("epochs", "crop_size", "batch_size", "max_train_steps")
    assert cfg["arch"] == "resnet34" and {k: cfg[k] for k in run} == {k: config.QUICK[k] for k in run}


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


def test_a_given_test_points_path_wins_over_the_file_in_a_ready_data_dir(synth_copy, tmp_path, capsys):
    dest = synth_copy / "test" / "test_points.csv"
    given = tmp_path / "tp.csv"
    given.write_bytes(dest.read_bytes().replace(b"\n", b"\r\n"))       # the user's corrected copy
    assert ensure_data(synth_copy, None, given) == synth_copy
    assert dest.read_bytes() == given.read_bytes()
    assert f"using {given} (test_points_path), not the file that was there" in capsys.readouterr().out
    ensure_data(synth_copy, None, given)
    assert capsys.readouterr().out == ""                               # the same file again: nothing to say
