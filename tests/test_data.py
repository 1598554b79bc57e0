"""data.py: the data set as a whole: its splits, the layout check and its report, the check CLI."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import break_landmarks, rewrite_line, row_image, run_cli, text_lines, write_lines
from landmarklib import data
from landmarklib.csvfiles import read_landmarks, read_test_points
from landmarklib.data import check
from landmarklib.errors import DataError


def _set_coordinate(root, row, value):
    rewrite_line(root / "train" / "landmarks.csv", row, lambda b: b.replace(b"\t", b"\t" + value + b"\t", 1)
                  .rsplit(b"\t", 1)[0])


def _image_of_row(root, row):
    name = (root / "train" / "landmarks.csv").read_text().splitlines()[row].split("\t", 1)[0]
    return root / "train" / "images" / name


def _tiny_image(root, row, size):
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


def test_reads_the_synthetic_set(synth_dir):
    names, lm = read_landmarks(synth_dir / "train" / "landmarks.csv")
    assert lm.shape == (60, 971, 2) and lm.dtype == np.int16 and len(names) == 60   # whole numbers: exact as int16
    first = text_lines(synth_dir / "train" / "landmarks.csv")[1].split("\t")
    assert names[0] == first[0] and lm[0, 0, 0] == float(first[1]) and lm[0, 970, 1] == float(first[-1])
    tnames, idx = read_test_points(synth_dir / "test" / "test_points.csv")
    assert idx.shape == (20, 30) and (idx >= 0).all() and (idx < 971).all()


def test_check_reports_counts(synth_dir):
    r = check(synth_dir, workers=1)
    assert r["train"]["images"] == 60 and r["test"]["images"] == 20 and r["test"]["ground_truth"]
    assert 100 <= r["train"]["width"][0] <= r["train"]["width"][1] <= 400


def test_negative_coordinates_are_valid(synth_copy):
    p = synth_copy / "train" / "landmarks.csv"
    lines = text_lines(p)
    f = lines[3].split("\t")
    f[1], f[2] = "-22", "-3"
    lines[3] = "\t".join(f)
    write_lines(p, lines)
    _, lm = read_landmarks(p)
    assert lm[2, 0].tolist() == [-22, -3]
    assert check(synth_copy, workers=1)["train"]["rows_with_negative_coordinates"] >= 1


def test_missing_images_are_counted_up_front(synth_copy):
    imgs = sorted((synth_copy / "train" / "images").iterdir())
    imgs[0].unlink()
    imgs[5].unlink()
    with pytest.raises(DataError, match=r"landmarks.csv:\d+: image .* not found .* \(2 listed image\(s\) missing"):
        check(synth_copy, workers=1)


def test_corrupt_image_is_named(synth_copy):
    victim = sorted((synth_copy / "test" / "images").iterdir())[3]
    victim.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=f"{victim.name}: unreadable image"):
        check(synth_copy, workers=1)


def test_cli_exit_codes_and_no_traceback(synth_copy):
    ok = subprocess.run([sys.executable, "-m", "landmarklib.data", "check", "--data-dir", str(synth_copy)],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "train: 60 images" in ok.stdout and "layout OK" in ok.stdout
    break_landmarks(synth_copy, lambda L: L.__setitem__(7, L[2]))
    bad = subprocess.run([sys.executable, "-m", "landmarklib.data", "check", "--data-dir", str(synth_copy)],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert "landmarks.csv:8: duplicate file_name" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("make, kind", [
    (lambda img, t: os.mkfifo(img), "a named pipe"),
    (lambda img, t: (os.mkfifo(t / "pipe"), img.symlink_to(t / "pipe")), "a named pipe"),
    (lambda img, t: img.symlink_to(t / "gone.jpg"), "a broken link"),
    (lambda img, t: img.mkdir(), "a folder"),
])
def test_an_image_that_is_not_a_regular_file_is_named_before_any_read(synth_copy, tmp_path, make, kind):
    from landmarklib.data import load_split
    img = synth_copy / "train" / "images" / load_split(synth_copy, "train").names[3]
    img.unlink()
    make(img, tmp_path)
    with pytest.raises(DataError, match=rf"{img.name}: not a regular file but {kind} \(listed at .*landmarks.csv:5"):
        check(synth_copy, workers=1)                                   # a pipe opened for reading would block


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
    rc, err = run_cli(data.main, ["check", "--data-dir", synth_copy], capsys)
    assert rc == 2
    assert re.search(message, err), err


def test_slightly_outside_points_stay_valid_and_wrong_labels_are_left_to_the_eda(synth_copy):
    _set_coordinate(synth_copy, 4, b"-22")
    report = data.check(synth_copy, workers=1)["train"]
    assert report["rows_with_negative_coordinates"] >= 1 and report["rows_beyond_an_image_size"] == 0
    _set_coordinate(synth_copy, 4, b"-900")             # another image's labels, say: valid input, counted
    assert data.check(synth_copy, workers=1)["train"]["rows_beyond_an_image_size"] == 1


def test_an_image_replaced_by_a_half_size_copy_is_named_by_check_and_flagged_by_the_eda(synth_copy, capsys):
    """Its labels are not that image's: like another image's labels, a wrong label (the EDA's to flag
    for the blocklist), no longer reported as valid input."""
    from landmarklib import eda
    p = row_image(synth_copy, 9)
    im = Image.open(p)
    im.resize((im.width // 2, im.height // 2)).save(p, "JPEG")
    report = data.check(synth_copy, workers=1)
    assert report["train"]["rows_mostly_outside"] >= 1
    text = data.format_report(report)
    assert f"first {synth_copy / 'train' / 'landmarks.csv'}:11: " in text
    assert f"of 971 points outside the {im.width // 2}x{im.height // 2} image '{p.name}': not labels of that image" in text
    flagged = eda.score_annotations(synth_copy, use_model=False, progress=False)
    assert flagged.set_index("file_name").loc[p.name, "flagged"]
