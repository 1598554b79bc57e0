"""submission.py: the submission file, written and read back exactly, its bad values named."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from landmarklib import csvfiles, data, score, submission
from landmarklib.cache import build_cache
from landmarklib.data import load_split
from landmarklib.errors import DataError
from landmarklib.score import score_submission
from landmarklib.submission import read_submission, write_submission


def _sub(synth_dir, tmp_path):
    t = load_split(synth_dir, "test")
    return write_submission(tmp_path / "s.csv", t.names, t.landmarks, t.indices)


def _submission(synth_dir, tmp_path):
    names, idx = csvfiles.read_test_points(synth_dir / "test" / "test_points.csv")
    pts = np.random.default_rng(0).uniform(0, 100, (len(names), 971, 2))
    return submission.write_submission(tmp_path / "sub.csv", names, pts, idx)


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


def test_a_submission_of_booleans_is_refused(synth_dir, tmp_path, capsys):
    t = load_split(synth_dir, "test")
    p = write_submission(tmp_path / "s.csv", t.names, t.landmarks, t.indices)
    df = pd.read_csv(p)
    df["Point_M3_Y"] = df["Point_M3_Y"] > 100
    df.to_csv(p, index=False)
    for main in (submission.main, score.main):
        args = (["check"] if main is submission.main else []) + [p, "--data-dir", synth_dir]
        rc, err = run_cli(main, args, capsys)
        assert rc == 2 and "s.csv:2: column 'Point_M3_Y' holds true/false, not pixel coordinates" in err


def test_writer_matches_a_hand_written_file(tmp_path):
    names = np.array(["a" * 32 + ".jpg", "b" * 32 + ".jpg"])
    pts = np.zeros((2, 971, 2))
    pts[0, :, 0] = np.arange(971) + 0.5      # .5 rounds half to even
    pts[0, :, 1] = -np.arange(971) - 0.4
    pts[1, :, 0] = 2.6
    pts[1, :, 1] = np.arange(971) * 10 + 0.49
    idx = np.array([list(range(970, 940, -1)), list(range(30))])
    got = write_submission(tmp_path / "sub.csv", names, pts, idx).read_text()
    header = "file_name," + ",".join(f"Point_M{i}_X,Point_M{i}_Y" for i in range(30))
    row0 = ",".join(f"{round(k + 0.5)},{-k}" for k in range(970, 940, -1))
    row1 = ",".join(f"3,{k * 10}" for k in range(30))
    assert got == f"{header}\n{names[0]},{row0}\n{names[1]},{row1}\n"


def test_score_is_zero_for_truth_and_12_5_for_a_3_4_shift(synth_dir, tmp_path):
    t = load_split(synth_dir, "test")
    write_submission(tmp_path / "truth.csv", t.names, t.landmarks, t.indices)
    write_submission(tmp_path / "shift.csv", t.names, t.landmarks + np.array([3, 4]), t.indices)
    assert score_submission(tmp_path / "truth.csv", synth_dir) == 0.0
    assert score_submission(tmp_path / "shift.csv", synth_dir) == pytest.approx(12.5)
    out = subprocess.run([sys.executable, "-m", "landmarklib.score", str(tmp_path / "shift.csv"), "--data-dir",
                          str(synth_dir)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "MSE 12.5000"


@pytest.mark.parametrize("edit, message", [
    (lambda L: L.__setitem__(0, L[0].replace("Point_M0_X", "Point_0_X")), r"s.csv:1: header must be"),
    (lambda L: L.pop(), r"19 rows, expected 20"),
    (lambda L: L.__setitem__(2, L[3]), r"s.csv:3: file_name .* expected .* test_points.csv order"),
    (lambda L: L.__setitem__(4, L[4].replace(",", ",nan,", 1).rsplit(",", 1)[0] + "\n"),
     r"s.csv:5: column 'Point_M0_X' is .*not a finite number"),
])
def test_bad_submission_is_located(synth_dir, tmp_path, edit, message):
    p = _sub(synth_dir, tmp_path)
    lines = p.read_text().splitlines(keepends=True)
    edit(lines)
    p.write_text("".join(lines))
    with pytest.raises(DataError, match=message):
        read_submission(p, synth_dir / "test" / "test_points.csv")
    out = subprocess.run([sys.executable, "-m", "landmarklib.submission", "check", str(p), "--data-dir",
                          str(synth_dir)], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "s.csv" in out.stderr


def test_score_without_ground_truth_is_a_clear_error(synth_copy, tmp_path):
    p = _sub(synth_copy, tmp_path)
    (synth_copy / "test" / "landmarks.csv").unlink()
    with pytest.raises(DataError, match="no test ground truth"):
        score_submission(p, synth_copy)


@pytest.mark.parametrize("value, why", [(np.nan, "not a finite number"), (3.8e10, "not a pixel coordinate")])
def test_a_diverged_models_predictions_are_not_written(synth_dir, tmp_path, value, why):
    """What the checker refuses is never written: predict names the checkpoint instead (exit 2)."""
    t = load_split(synth_dir, "test")
    points = t.landmarks.astype(np.float64).copy()
    points[2, t.indices[2, 5]] = value
    with pytest.raises(DataError, match=rf"runs/x/best.pt: predicts .* for {str(t.names[2])!r} column 'Point_M5_X': "
                                        rf"{why}.*/s.csv not written"):
        write_submission(tmp_path / "s.csv", t.names, points, t.indices, source="runs/x/best.pt")
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("value", ["1e300", "-2e5"])
def test_a_value_no_image_has_is_refused_on_its_line(synth_dir, tmp_path, capsys, value):
    p = _submission(synth_dir, tmp_path)
    lines = p.read_text().splitlines()
    cells = lines[3].split(",")
    cells[5] = value
    lines[3] = ",".join(cells)
    p.write_text("\n".join(lines) + "\n")
    rc, err = run_cli(submission.main, ["check", p, "--data-dir", synth_dir], capsys)
    assert rc == 2 and f"sub.csv:4: column 'Point_M2_X' is {float(value):g}, not a pixel coordinate" in err


@pytest.mark.parametrize("where", ["end", "middle"])
def test_a_blank_line_in_a_submission_is_named(synth_dir, tmp_path, capsys, where):
    p = _submission(synth_dir, tmp_path)
    lines = p.read_text().splitlines()
    lines.insert(len(lines) if where == "end" else 5, "")
    p.write_text("\n".join(lines) + "\n")
    rc, err = run_cli(submission.main, ["check", p, "--data-dir", synth_dir], capsys)
    line = len(lines) if where == "end" else 6
    assert rc == 2 and f"sub.csv:{line}: blank line" in err
