import hashlib

import numpy as np
import pandas as pd

from landmarklib.csvfiles import read_landmarks
from landmarklib.synth import CORRUPTIONS, make_dataset


def _digest(root):
    h = hashlib.sha1()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


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
