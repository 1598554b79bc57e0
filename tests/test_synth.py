"""synth.py: the synthetic demo set, in the contest's exact format."""
import hashlib

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from landmarklib import synth
from landmarklib.csvfiles import read_landmarks
from landmarklib.synth import CORRUPTIONS, main as synth_main, make_dataset


def _digest(root):
    h = hashlib.sha1()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("args, message", [
    (["--n-train", "0"], "--n-train must be at least 10 (got 0)"),
    (["--n-train", "-5"], "--n-train must be at least 10 (got -5)"),
    (["--seed", "-1"], "--seed 0 or more (got -1)"),
])
def test_synth_numeric_arguments(tmp_path, args, message, capsys):
    rc, err = run_cli(synth.main, [tmp_path / "d", *args], capsys)
    assert rc == 2 and message in err and not (tmp_path / "d").exists()


def test_synth_never_writes_into_a_folder_that_holds_anything(synth_copy, capsys):
    before = (synth_copy / "train" / "landmarks.csv").read_bytes()
    (synth_copy / "SYNTHETIC.json").unlink()                       # now it looks like a contest folder
    assert synth_main([str(synth_copy), "--n-train", "10", "--n-test", "2"]) == 2
    assert "not empty; the synthetic set is only written into a new or empty folder" in capsys.readouterr().err
    assert (synth_copy / "train" / "landmarks.csv").read_bytes() == before


def test_deterministic_for_a_seed(tmp_path):
    a = make_dataset(tmp_path / "a", 12, 4, seed=5, bad_fraction=0.25, workers=1)
    b = make_dataset(tmp_path / "b", 12, 4, seed=5, bad_fraction=0.25, workers=2)
    c = make_dataset(tmp_path / "c", 12, 4, seed=6, bad_fraction=0.25, workers=1)
    assert _digest(a) == _digest(b) != _digest(c)


def test_layout_names_and_planted_corruptions(synth_dir):
    names = sorted(p.name for p in (synth_dir / "train" / "images").iterdir())
    assert all(len(n) == 36 and n.endswith(".jpg") and int(n[:32], 16) >= 0 for n in names)
    planted = pd.read_csv(synth_dir / "train" / "planted_bad.csv")
    assert list(planted.columns) == ["file_name", "kind"]
    assert sorted(planted["kind"]) == sorted(CORRUPTIONS)    # 5 rows, one of each kind
    _, truth = read_landmarks(synth_dir / "test" / "landmarks.csv")
    assert truth.shape == (20, 971, 2) and (truth == np.rint(truth)).all()
