"""atomic.py: a failed write keeps the old file whole."""
import pandas as pd
import pytest

from conftest import enospc, run_cli
from landmarklib import eda
from landmarklib.data import load_split
from landmarklib.errors import DataError
from landmarklib.submission import write_submission


def test_atomic_path_keeps_the_old_file_when_a_write_fails(tmp_path):
    from landmarklib.atomic import atomic_path
    target = tmp_path / "last.pt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half of a new")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_a_full_disk_while_writing_a_submission_or_eda_output_keeps_the_old_file(synth_dir, tmp_path, monkeypatch,
                                                                                  capsys):
    t = load_split(synth_dir, "test")
    sub = write_submission(tmp_path / "s.csv", t.names, t.landmarks, t.indices)
    old = sub.read_bytes()
    (tmp_path / "b.csv").write_text("old scores\n")
    monkeypatch.setattr(pd.DataFrame, "to_csv", enospc)
    with pytest.raises(DataError, match=r"s.csv: no space left on the device"):
        write_submission(sub, t.names, t.landmarks + 1, t.indices)
    rc, err = run_cli(eda.main, ["--data-dir", synth_dir, "--no-model", "--out", tmp_path / "b.csv"], capsys)
    assert rc == 2 and "b.csv: no space left on the device" in err
    assert sub.read_bytes() == old and (tmp_path / "b.csv").read_text() == "old scores\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.csv", "s.csv"]
