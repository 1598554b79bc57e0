"""csvfiles.py: the contest's CSVs and blocklists, every problem located at its file and line."""
import re

import numpy as np
import pytest

from conftest import break_landmarks, byte_lines, peak_bytes, rewrite_line, run_cli, text_lines, write_lines
from landmarklib import csvfiles, data
from landmarklib.csvfiles import read_blocklist, read_landmark_lines, read_landmarks, read_test_points
from landmarklib.data import check
from landmarklib.errors import DataError


def _write_csv(path, n, rng, last=None):
    from landmarklib.csvfiles import LANDMARK_COLUMNS
    block = rng.integers(-22, 1308, (100, 1942))
    with open(path, "w") as f:
        f.write("\t".join(LANDMARK_COLUMNS) + "\n")
        for i in range(n):
            values = block[i % 100].tolist() if last is None or i < n - 1 else [last] * 1942
            f.write(f"{i:032x}.jpg\t" + "\t".join(map(str, values)) + "\n")
    return path


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
    p = break_landmarks(synth_copy, breakage)
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
    lines = text_lines(p)
    lines[2] = lines[2].split("\t")[0] + "\t" + value + "\n"
    write_lines(p, lines)
    with pytest.raises(DataError, match=message):
        read_test_points(p)


def test_read_landmark_lines_gives_those_lines_in_the_order_asked(synth_copy):
    path = synth_copy / "train" / "landmarks.csv"
    _, lm = read_landmarks(path)
    np.testing.assert_array_equal(read_landmark_lines(path, [9, 2, 9, 61]), lm[[7, 0, 7, 59]])
    with pytest.raises(DataError, match=r"landmarks.csv:62: no such line"):
        read_landmark_lines(path, [2, 62])
    with pytest.raises(DataError, match=r"nowhere.csv: file not found"):
        read_landmark_lines(path.parent / "nowhere.csv", [2])
    lines = text_lines(path)
    lines[3] = lines[3].replace("\t", "\t\t", 1).rsplit("\t", 1)[0] + "\n"   # a blank cell on line 4
    write_lines(path, lines)
    with pytest.raises(DataError, match=r"landmarks.csv:4: missing or non-finite value"):
        read_landmark_lines(path, [2, 4])


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


@pytest.mark.parametrize("breakage, message", [
    (lambda r: rewrite_line(r / "train" / "landmarks.csv", 3, lambda b: b[:40] + b"\xff\xfe" + b[42:]),
     r"landmarks.csv:4: byte 0xff at column 41 is not UTF-8 text"),
    (lambda r: rewrite_line(r / "test" / "test_points.csv", 2, lambda b: b"\xe9" + b),
     r"test_points.csv:3: byte 0xe9 at column 1 is not UTF-8"),
    (lambda r: (r / "train" / "landmarks.csv").write_bytes(byte_lines(r / "train" / "landmarks.csv")[0] + b"\n"),
     r"landmarks.csv: no data rows"),
    (lambda r: rewrite_line(r / "test" / "test_points.csv", 2, lambda b: b.split(b"\t")[0] + b"\t" + b"[" * 5000 + b"]" * 5000),
     r"test_points.csv:3: point_index_list '\[\[\[.*\.\.\.' is not a list of integers"),
    (lambda r: rewrite_line(r / "train" / "landmarks.csv", 5, lambda b: b"\n" + b),
     r"landmarks.csv:6: blank line"),
], ids=["utf8-landmarks", "utf8-test-points", "header-only", "nested-list", "blank-line"])
def test_bad_csv_bytes_are_located(synth_copy, breakage, message, capsys):
    breakage(synth_copy)
    rc, err = run_cli(data.main, ["check", "--data-dir", synth_copy], capsys)
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


@pytest.mark.slow
def test_parsing_landmarks_csv_costs_int16_per_row(monkeypatch):
    """The parse keeps int16 labels (3,884 bytes a row) and a name; float32 would be 7,768. Slope
    between 1,000 and 4,000 rows, parsed 500 rows at a time so that the parser's chunk (about 25 kB a
    row of it) cancels (issue 22: the cache and EDA stages peaked at 4.95 / 4.98 GiB at full size
    with float32)."""
    import tempfile
    from pathlib import Path
    monkeypatch.setattr(csvfiles, "CHUNK_ROWS", 500)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        paths = [_write_csv(Path(d) / "small.csv", 1000, rng), _write_csv(Path(d) / "large.csv", 4000, rng)]
        small, large = (peak_bytes(lambda: csvfiles.read_landmarks(path)) for path in paths)
    per_row = (large - small) / 3000
    assert per_row < 5000, per_row      # float32 labels: 7,768 bytes a row and more


def test_labels_that_are_not_whole_numbers_fall_back_to_float32_exactly(tmp_path, capsys):
    rng = np.random.default_rng(1)
    _, lm = read_landmarks(_write_csv(tmp_path / "a.csv", 30, rng))
    assert lm.dtype == np.int16
    _, lm2 = read_landmarks(_write_csv(tmp_path / "b.csv", 30, np.random.default_rng(1), last=12.5))
    assert lm2.dtype == np.float32 and (lm2[-1] == 12.5).all()
    np.testing.assert_array_equal(lm2[:-1], lm[:-1])
    assert "a.csv" not in capsys.readouterr().out
    _, lm3 = read_landmarks(_write_csv(tmp_path / "c.csv", 30, np.random.default_rng(1), last=40000))
    assert lm3.dtype == np.float32 and (lm3[-1] == 40000).all()
    assert "c.csv:2: labels that are not whole numbers from here on" in capsys.readouterr().out


def test_blocklist_flags_take_the_words_people_write_or_name_the_row(tmp_path):
    bl = tmp_path / "bl.csv"
    bl.write_text("file_name,flagged\na.jpg,yes\nb.jpg,no\nc.jpg, On \nd.jpg,0\ne.jpg,TRUE\n")
    assert read_blocklist(bl) == {"a.jpg", "c.jpg", "e.jpg"}
    for cell, shown in (("maybe", "'maybe'"), ("", "''")):
        bl.write_text(f"file_name,flagged\na.jpg,true\nb.jpg,{cell}\n")
        with pytest.raises(DataError, match=rf"bl.csv:3: flagged is {shown}; write true or false"):
            read_blocklist(bl)
