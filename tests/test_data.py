import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import zip_of

from landmarklib.csvfiles import read_landmark_lines, read_landmarks, read_test_points
from landmarklib.data import check
from landmarklib.errors import DataError


def _lines(path):
    return path.read_text().splitlines(keepends=True)


def _rewrite(path, lines):
    path.write_text("".join(lines))


def test_reads_the_synthetic_set(synth_dir):
    names, lm = read_landmarks(synth_dir / "train" / "landmarks.csv")
    assert lm.shape == (60, 971, 2) and lm.dtype == np.int16 and len(names) == 60   # whole numbers: exact as int16
    first = _lines(synth_dir / "train" / "landmarks.csv")[1].split("\t")
    assert names[0] == first[0] and lm[0, 0, 0] == float(first[1]) and lm[0, 970, 1] == float(first[-1])
    tnames, idx = read_test_points(synth_dir / "test" / "test_points.csv")
    assert idx.shape == (20, 30) and (idx >= 0).all() and (idx < 971).all()


def test_check_reports_counts(synth_dir):
    r = check(synth_dir, workers=1)
    assert r["train"]["images"] == 60 and r["test"]["images"] == 20 and r["test"]["ground_truth"]
    assert 100 <= r["train"]["width"][0] <= r["train"]["width"][1] <= 400


def test_negative_coordinates_are_valid(synth_copy):
    p = synth_copy / "train" / "landmarks.csv"
    lines = _lines(p)
    f = lines[3].split("\t")
    f[1], f[2] = "-22", "-3"
    lines[3] = "\t".join(f)
    _rewrite(p, lines)
    _, lm = read_landmarks(p)
    assert lm[2, 0].tolist() == [-22, -3]
    assert check(synth_copy, workers=1)["train"]["rows_with_negative_coordinates"] >= 1


def _break_landmarks(root, fn):
    p = root / "train" / "landmarks.csv"
    lines = _lines(p)
    fn(lines)
    _rewrite(p, lines)
    return p


@pytest.mark.parametrize("breakage, message", [
    (lambda L: L.__setitem__(0, L[0].replace("Point_5_X", "Point_5_x")), r":1: header column 12 is 'Point_5_x'"),
    (lambda L: L.__setitem__(0, "file_name,Point_0_X\n"), r":1: header has 1 columns, expected 1943"),
    (lambda L: L.__setitem__(4, L[4].rstrip("\n") + "\t7\n"), r":5: 1944 fields, expected 1943"),
    (lambda L: L.__setitem__(4, L[4].rsplit("\t", 1)[0] + "\n"), r":5: missing or non-finite value in column 'Point_970_Y'"),
    (lambda L: L.__setitem__(6, L[6].replace("\t", "\tabc\t", 1).replace("\t", "", 0)), None),
    (lambda L: L.__setitem__(7, L[2]), r":8: duplicate file_name .* \(first on line 3\)"),
])
def test_bad_landmarks_csv_is_located(synth_copy, breakage, message):
    if message is None:  # a non-numeric value: replace the 3rd coordinate of line 7
        def breakage(L):
            f = L[6].split("\t")
            f[3] = "12a"
            L[6] = "\t".join(f)
        message = r":7: column 'Point_1_X' is '12a', not a number"
    p = _break_landmarks(synth_copy, breakage)
    with pytest.raises(DataError, match=message) as e:
        read_landmarks(p)
    assert str(p) in str(e.value)


@pytest.mark.parametrize("value, message", [
    ("[1, 2, 3]", r":3: point_index_list has 3 indices, expected 30"),
    (str(list(range(29)) + [971]), r":3: index 971 outside 0..970"),
    (str(list(range(29)) + [-1]), r":3: index -1 outside 0..970"),
    (str(list(range(29)) + [0]), r":3: point_index_list repeats an index"),
    ("__import__('os').system('echo pwned')", r":3: point_index_list .* is not a list of integers"),
])
def test_bad_test_points_are_located(synth_copy, value, message):
    p = synth_copy / "test" / "test_points.csv"
    lines = _lines(p)
    lines[2] = lines[2].split("\t")[0] + "\t" + value + "\n"
    _rewrite(p, lines)
    with pytest.raises(DataError, match=message):
        read_test_points(p)


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
    _break_landmarks(synth_copy, lambda L: L.__setitem__(7, L[2]))
    bad = subprocess.run([sys.executable, "-m", "landmarklib.data", "check", "--data-dir", str(synth_copy)],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert "landmarks.csv:8: duplicate file_name" in bad.stderr and "Traceback" not in bad.stderr


def test_unpack_contest_zip_with_separate_test_points(synth_dir, tmp_path):
    """The 2020 layout: a zip with a top folder, test_points.csv shipped beside it."""
    import zipfile
    from landmarklib.unpack import unpack_contest
    zpath = zip_of(synth_dir, tmp_path / "drive" / "contest.zip", skip=("test_points.csv",))
    (tmp_path / "drive" / "test_points.csv").write_bytes((synth_dir / "test" / "test_points.csv").read_bytes())
    out = unpack_contest(zpath, tmp_path / "data", scratch=tmp_path)
    assert check(out, workers=1)["train"]["images"] == 60
    with pytest.raises(DataError, match="no train/landmarks.csv inside the zip"):
        bad = tmp_path / "empty.zip"
        zipfile.ZipFile(bad, "w").close()
        unpack_contest(bad, tmp_path / "other")


def test_atomic_path_keeps_the_old_file_when_a_write_fails(tmp_path):
    from landmarklib.atomic import atomic_path
    target = tmp_path / "last.pt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half of a new")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_read_landmark_lines_gives_those_lines_in_the_order_asked(synth_copy):
    path = synth_copy / "train" / "landmarks.csv"
    _, lm = read_landmarks(path)
    np.testing.assert_array_equal(read_landmark_lines(path, [9, 2, 9, 61]), lm[[7, 0, 7, 59]])
    with pytest.raises(DataError, match=r"landmarks.csv:62: no such line"):
        read_landmark_lines(path, [2, 62])
    with pytest.raises(DataError, match=r"nowhere.csv: file not found"):
        read_landmark_lines(path.parent / "nowhere.csv", [2])
    lines = _lines(path)
    lines[3] = lines[3].replace("\t", "\t\t", 1).rsplit("\t", 1)[0] + "\n"   # a blank cell on line 4
    _rewrite(path, lines)
    with pytest.raises(DataError, match=r"landmarks.csv:4: missing or non-finite value"):
        read_landmark_lines(path, [2, 4])


def test_a_rerun_with_another_zip_unpacks_it_in_place_of_the_old_data(synth_dir, tmp_path, capsys):
    from landmarklib.data import load_split
    from landmarklib.unpack import unpack_contest
    from landmarklib.synth import make_dataset
    a = zip_of(synth_dir, tmp_path / "a" / "contest.zip")
    b = zip_of(make_dataset(tmp_path / "other", n_train=40, n_test=10, seed=9, workers=1), tmp_path / "b" / "contest.zip")
    d = tmp_path / "data"
    unpack_contest(a, d, scratch=tmp_path / "s")
    unpack_contest(a, d, scratch=tmp_path / "s")                     # the same zip: nothing to do, nothing said
    assert "again" not in capsys.readouterr().out
    unpack_contest(b, d, scratch=tmp_path / "s")
    assert f"unpacked from {a.resolve()} before; unpacking {b} again" in capsys.readouterr().out
    assert len(load_split(d, "train").names) == 40 and len(list((d / "train" / "images").iterdir())) == 40


def test_an_unfinished_unpack_of_another_zip_is_not_mixed_in(synth_dir, tmp_path, capsys):
    import json
    from landmarklib.unpack import unpack_contest
    a = zip_of(synth_dir, tmp_path / "a" / "contest.zip")
    d = tmp_path / "data"
    (d / "train" / "images").mkdir(parents=True)
    (d / "train" / "images" / "stale.jpg").write_bytes(b"x")           # what the other zip's unpack left
    (d / ".unpacking").write_text(json.dumps({"path": "/elsewhere/other.zip", "size": 1, "mtime_ns": 1}))
    unpack_contest(a, d, scratch=tmp_path / "s")
    assert "an unfinished unpack of another zip" in capsys.readouterr().out
    assert not (d / "train" / "images" / "stale.jpg").exists() and not (d / ".unpacking").exists()


def test_given_test_points_win_over_the_zips_own_and_a_corrected_file_is_taken_on_a_rerun(synth_dir, tmp_path,
                                                                                          capsys):
    from landmarklib.unpack import unpack_contest
    z = zip_of(synth_dir, tmp_path / "contest.zip")
    own = (synth_dir / "test" / "test_points.csv").read_bytes()
    given = tmp_path / "given.csv"
    given.write_bytes(own.replace(b"\n", b"\r\n"))                   # the same points, another file
    d = tmp_path / "data"
    unpack_contest(z, d, given, scratch=tmp_path / "s")
    assert f"using {given}, not the test_points.csv inside contest.zip" in capsys.readouterr().out
    assert (d / "test" / "test_points.csv").read_bytes() == given.read_bytes()
    corrected = tmp_path / "corrected.csv"
    corrected.write_bytes(own)
    unpack_contest(z, d, corrected, scratch=tmp_path / "s")
    assert f"using {corrected}, not the test_points.csv it held" in capsys.readouterr().out
    assert (d / "test" / "test_points.csv").read_bytes() == own
    with pytest.raises(DataError, match=r"nowhere.csv: test_points.csv not found"):
        unpack_contest(z, d, tmp_path / "nowhere.csv", scratch=tmp_path / "s")


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


def test_zip_members_of_the_kinds_windows_and_attackers_write(synth_dir, tmp_path):
    """Backslash separators are folders; a symbolic link, an encrypted member, Deflate64 (Windows
    Explorer's large zips) or another method zipfile cannot read is one line naming it, nothing unpacked."""
    import zipfile
    from landmarklib.data import load_split
    from landmarklib.unpack import _check_member, unpack_contest
    z = zip_of(synth_dir, tmp_path / "win.zip", sep="\\")
    assert len(load_split(unpack_contest(z, tmp_path / "data", scratch=tmp_path / "s"), "train").names) == 60
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        zf.writestr("DATA/train/landmarks.csv", "x")
        info = zipfile.ZipInfo("DATA/train/images")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc")
    with pytest.raises(DataError, match=r"link.zip: member 'DATA/train/images' is a symbolic link.*; nothing unpacked"):
        unpack_contest(link, tmp_path / "d2", scratch=tmp_path / "s")
    assert not (tmp_path / "d2").exists()
    for field, value, said in (("flag_bits", 0x1, "is encrypted"), ("compress_type", 9, "is compressed with Deflate64"),
                               ("compress_type", 99, "uses compression method 99")):
        info = zipfile.ZipInfo("DATA/train/x.jpg")
        setattr(info, field, value)
        with pytest.raises(DataError, match=rf"c.zip: member 'DATA/train/x.jpg' {said}"):
            _check_member(info, tmp_path / "c.zip")


def test_csv_names_as_the_user_wrote_them_or_the_row_named(synth_copy):
    """A file_name beginning with a quote is that name (the format has no quoting); a name in NFC
    that is NFD on disk (copied from a Mac) names the row and both spellings."""
    import unicodedata
    from landmarklib.data import load_split
    csv = synth_copy / "train" / "landmarks.csv"
    lines = csv.read_text().split("\n")
    images = synth_copy / "train" / "images"
    for row, new in ((2, '"quoted.jpg'), (4, unicodedata.normalize("NFC", "café.jpg"))):
        old = lines[row + 1].split("\t", 1)[0]
        on_disk = new if row == 2 else unicodedata.normalize("NFD", new)
        (images / old).rename(images / on_disk)
        lines[row + 1] = new + lines[row + 1][len(old):]
    csv.write_text("\n".join(lines))
    assert load_split(synth_copy, "train").names[2] == '"quoted.jpg'
    nfc, nfd = (unicodedata.normalize(form, "café.jpg") for form in ("NFC", "NFD"))
    with pytest.raises(DataError, match=rf"landmarks.csv:6: image '{nfc}' is on disk as '{nfd}', the same name "
                                        r"in another Unicode normalization"):
        check(synth_copy, workers=1)
    (images / nfd).rename(images / nfc)
    assert check(synth_copy, workers=1)["train"]["images"] == 60
