"""Reading and checking the contest layout (docs/FORMAT.md).

    python -m landmarklib.data check --data-dir D

Every problem is a DataError whose message starts with `file:line:` so a user can open
the file at the right place; the CLI prints it and exits 2, without a traceback.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic import atomic_path
from .errors import DataError, cli
from .layout import N_POINTS
from .progress import bar
from .settings import BOOL_WORDS, parse_bool
from .workers import process_pool

N_QUERY = 30
LANDMARK_COLUMNS = ["file_name"] + [f"Point_{i}_{c}" for i in range(N_POINTS) for c in "XY"]
TEST_COLUMNS = ["file_name", "point_index_list"]
LANDMARK_DTYPES = {c: np.float32 for c in LANDMARK_COLUMNS[1:]} | {"file_name": str}   # parsed straight to float32
SPLIT_CSV = {"train": "landmarks.csv", "test": "test_points.csv"}   # the CSV that lists each split's images
CHUNK_ROWS = 5_000   # rows parsed at a time: the parser holds ~0.1 GB of text and tokens per chunk
PARSE_BAR_ROWS = 20_000   # a parse this long (about 4 s) shows a progress bar: the contest's takes a minute
MIN_SIDE = 16        # px: an image smaller than this on a side cannot hold a face
FAR_OUTSIDE = 10     # image sizes past an edge: no annotation of this image at all
MOSTLY_OUTSIDE = 0.5  # a row with more than this share of its points outside its image: not this image's labels
EXIF_ORIENTATION = 0x0112   # the EXIF tag cv2.imread (the organizers' loader) applies, and so do we
EIGHT_BIT_MODES = {"1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "YCbCr", "PA", "La", "RGBa"}


def _where(path: Path | str, line: int | None = None) -> str:
    return f"{path}:{line}" if line is not None else str(path)


def _bad_byte(path: Path) -> DataError:
    """Slow path, only on bad input: the first line that is not UTF-8, and the byte."""
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                return DataError(f"{_where(path, line_no)}: byte 0x{line[e.start]:02x} at column {e.start + 1} is not "
                                 f"UTF-8 text (is this the right file?)")
    return DataError(f"{path}: not UTF-8 text")


def _check_header(path: Path, sep: str, expected: list[str]) -> None:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8", newline="") as f:
            header = f.readline().rstrip("\r\n").split(sep)
    except UnicodeDecodeError:
        raise _bad_byte(path) from None
    if header == expected:
        return
    if len(header) != len(expected):
        raise DataError(f"{_where(path, 1)}: header has {len(header)} columns, expected {len(expected)} "
                        f"({expected[0]!r}, {expected[1]!r}, ...; separator {sep!r})")
    bad = next(i for i, (a, b) in enumerate(zip(header, expected)) if a != b)
    raise DataError(f"{_where(path, 1)}: header column {bad + 1} is {header[bad]!r}, expected {expected[bad]!r}")


def _located_parser_error(path: Path, err: Exception) -> DataError:
    m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
    if m:
        expected, line, saw = m.groups()
        return DataError(f"{_where(path, int(line))}: {saw} fields, expected {expected} "
                         f"(Expected {expected} fields in line {line}, saw {saw})")
    return DataError(f"{path}: {err}")


def _read_csv_located(path: Path, sep: str, names: list[str], dtype, chunksize=None):
    """pd.read_csv with the C parser; a ragged line becomes a located DataError."""
    try:
        # Blank lines are kept (as rows of NaN) so every later line number stays right; they are errors.
        # The format has no quoting: a name that begins with a quote is that name, not an open string.
        return pd.read_csv(path, sep=sep, header=0, names=names, dtype=dtype, engine="c", quoting=csv.QUOTE_NONE,
                           chunksize=chunksize, na_filter=True, skip_blank_lines=False)
    except pd.errors.ParserError as e:
        raise _located_parser_error(path, e) from None
    except UnicodeDecodeError:
        raise _bad_byte(path) from None


def _count_lines(path: Path) -> int:
    """Newlines in the file, read 16 MB at a time (about a second per GB): sizes the label array."""
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 24), b""))


def read_landmarks(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """train/landmarks.csv -> (file names (N,), landmarks (N, 971, 2)): int16 when every value is a
    whole number that fits (the contest's are: -22 .. 1308), exact and half the memory; float32 from
    the first chunk that is not (said in one line).

    The C parser reads CHUNK_ROWS rows at a time (into float32), each chunk stored into one array
    sized from the line count up front: the 2020 file (394k rows, 3 GB of text) needs its 1.5 GB
    int16 result plus one chunk, never a second copy, and no per-line Python.
    """
    path = Path(path)
    _check_header(path, "\t", LANDMARK_COLUMNS)
    out = np.empty((_count_lines(path), N_POINTS, 2), np.int16)   # >= rows: the header ends a line
    names, first_line = [], 2
    reader = _read_csv_located(path, "\t", LANDMARK_COLUMNS, LANDMARK_DTYPES, chunksize=CHUNK_ROWS)
    rows_bar = bar(total=len(out), desc=f"parse {path.name}", unit="row", disable=len(out) < PARSE_BAR_ROWS)
    while True:
        try:
            chunk = next(reader)
        except StopIteration:
            rows_bar.total = rows_bar.n          # the line count sized it: one more (the header)
            rows_bar.close()
            break
        except pd.errors.ParserError as e:
            raise _located_parser_error(path, e) from None
        except UnicodeDecodeError:
            raise _bad_byte(path) from None
        except ValueError as e:  # a non-numeric value somewhere in this chunk: find it
            raise _locate_bad_value(path, first_line, e) from None
        values = chunk.iloc[:, 1:].to_numpy(dtype=np.float32)
        bad_rows = np.flatnonzero(~np.isfinite(values).all(axis=1) | chunk["file_name"].isna().to_numpy())
        if len(bad_rows):
            r = bad_rows[0]
            row = values[r]
            if chunk["file_name"].isna().iat[r] and np.isnan(row).all():
                raise DataError(f"{_where(path, first_line + r)}: blank line (every row is a file_name and "
                                f"{len(LANDMARK_COLUMNS) - 1} coordinates)")
            col = int(np.flatnonzero(~np.isfinite(row))[0]) + 1 if not np.isfinite(row).all() else 0
            raise DataError(f"{_where(path, first_line + r)}: missing or non-finite value in column "
                            f"{LANDMARK_COLUMNS[col]!r} (expected {len(LANDMARK_COLUMNS)} tab-separated fields)")
        start = first_line - 2
        if start + len(chunk) > len(out):   # a last line without its newline
            out = np.concatenate([out, np.empty((start + len(chunk) - len(out), N_POINTS, 2), out.dtype)])
        if out.dtype == np.int16 and not is_int16(values):
            print(f"{_where(path, first_line)}: labels that are not whole numbers from here on (or beyond "
                  f"±{INT16_LIMIT}): kept as float32, twice the memory of int16")
            out = out.astype(np.float32)   # the rows so far are exact in either
        out[start:start + len(chunk)] = values.reshape(-1, N_POINTS, 2)
        names.append(chunk["file_name"].to_numpy(dtype=object))
        first_line += len(chunk)
        rows_bar.update(len(chunk))
    if first_line == 2:
        raise DataError(f"{path}: no data rows (only a header)")
    names = np.concatenate(names).astype(str)
    _check_unique(path, names)
    return names, out[:first_line - 2]


INT16_LIMIT = 32_000   # labels whose magnitude stays below this are kept as int16


def is_int16(values: np.ndarray) -> bool:
    """Whether every value is a whole number below INT16_LIMIT in magnitude: exact as int16."""
    return bool(np.all(np.abs(values) < INT16_LIMIT) and np.array_equal(values, np.rint(values)))


def read_landmark_lines(path: Path | str, lines) -> np.ndarray:
    """The labels (float32, (len(lines), 971, 2)) on the given lines of a landmarks.csv (line 2 is the
    first data row, as in every error message), in the order given. The C parser skips the other
    lines without splitting them: a gallery's few rows of the 2020 file in about 4 s, not the full
    parse's minute and 3 GB."""
    path = Path(path)
    lines = np.asarray(lines, dtype=np.int64)
    wanted = np.unique(lines)
    if len(wanted) and wanted[0] < 2:
        raise ValueError(f"{path}: line {wanted[0]} holds no labels (line 1 is the header)")
    _check_header(path, "\t", LANDMARK_COLUMNS)
    keep = set(wanted.tolist())
    try:   # skiprows counts from 0 at the header: line i + 1
        df = pd.read_csv(path, sep="\t", header=0, names=LANDMARK_COLUMNS, dtype=LANDMARK_DTYPES, engine="c",
                         skiprows=lambda i: i > 0 and i + 1 not in keep)
    except (pd.errors.ParserError, ValueError) as e:
        raise DataError(f"{path}: {e}") from None
    if len(df) < len(wanted):
        raise DataError(f"{_where(path, int(wanted[-1]))}: no such line (the file has fewer rows)")
    values = df.iloc[:, 1:].to_numpy(dtype=np.float32).reshape(-1, N_POINTS, 2)
    bad = np.flatnonzero(~np.isfinite(values).all(axis=(1, 2)))
    if len(bad):
        raise DataError(f"{_where(path, int(wanted[bad[0]]))}: missing or non-finite value")
    return values[np.searchsorted(wanted, lines)]


def _locate_bad_value(path: Path, first_line: int, err: Exception) -> DataError:
    """Slow path, only on bad input: re-read as text from the failing chunk to name line and column."""
    text = pd.read_csv(path, sep="\t", header=0, names=LANDMARK_COLUMNS, dtype=str, engine="c",
                       skiprows=range(1, first_line - 1), nrows=CHUNK_ROWS, skip_blank_lines=False)
    numeric = text.iloc[:, 1:].apply(pd.to_numeric, errors="coerce")
    bad = numeric.isna() & text.iloc[:, 1:].notna()
    rows, cols = np.nonzero(bad.to_numpy())
    if len(rows) == 0:
        return DataError(f"{path}: {err}")
    r, c = rows[0], cols[0]
    return DataError(f"{_where(path, first_line + r)}: column {LANDMARK_COLUMNS[c + 1]!r} is "
                     f"{text.iat[r, c + 1]!r}, not a number")


def _check_unique(path: Path, names: np.ndarray) -> None:
    dup = pd.Series(names).duplicated(keep="first").to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero(names == names[i])[0])
        raise DataError(f"{_where(path, i + 2)}: duplicate file_name {str(names[i])!r} (first on line {first + 2}); "
                        f"{int(dup.sum())} duplicate row(s) in all")


def read_test_points(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """test/test_points.csv -> (file names (N,), point indices int64 (N, 30)). Lists are parsed as JSON."""
    path = Path(path)
    _check_header(path, "\t", TEST_COLUMNS)
    try:
        df = _read_csv_located(path, "\t", TEST_COLUMNS, str)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file (expected the header file_name, point_index_list)") from None
    if len(df) == 0:
        raise DataError(f"{path}: no data rows")
    indices = np.empty((len(df), N_QUERY), dtype=np.int64)
    for r, text in enumerate(df["point_index_list"].to_numpy()):
        line = r + 2
        if isinstance(text, str) and len(text) > 1 and text[0] == text[-1] == '"':   # a spreadsheet's quoting
            text = text[1:-1]
        try:   # a list of 30 small numbers is short: anything long or deeply nested is not one
            lst = json.loads(text) if isinstance(text, str) and len(text) < 1000 else None
        except (json.JSONDecodeError, RecursionError):
            lst = None
        if not isinstance(lst, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in lst):
            shown = text if not isinstance(text, str) or len(text) < 80 else text[:77] + "..."
            raise DataError(f"{_where(path, line)}: point_index_list {shown!r} is not a list of integers")
        if len(lst) != N_QUERY:
            raise DataError(f"{_where(path, line)}: point_index_list has {len(lst)} indices, expected {N_QUERY}")
        bad = [v for v in lst if not 0 <= v < N_POINTS]
        if bad:
            raise DataError(f"{_where(path, line)}: index {bad[0]} outside 0..{N_POINTS - 1}")
        if len(set(lst)) != N_QUERY:
            raise DataError(f"{_where(path, line)}: point_index_list repeats an index")
        indices[r] = lst
    names = df["file_name"].to_numpy(dtype=str)
    _check_unique(path, names)
    return names, indices


def split_indices(n: int, val_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """The organizers' split of landmarks.csv: the first rows train, the rest validate, unshuffled."""
    n_train = int(round(n * (1 - val_fraction)))
    return np.arange(n_train), np.arange(n_train, n)


def count_rows(path: Path | str) -> int:
    """The data rows of a CSV with a header, from its newlines (about a second per GB), without parsing it."""
    path = Path(path)
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 1))
        unterminated = f.read(1) not in (b"\n", b"")
    return max(0, _count_lines(path) - 1 + unterminated)


def check_split(n_rows: int, val_fraction: float, batch_size: int, csv: Path | str) -> None:
    """Before anything is written: the organizers' split of n_rows leaves at least one validation image
    and at least one full batch to train on, or one line says which is missing and what to change."""
    train_idx, val_idx = split_indices(n_rows, val_fraction)
    if len(val_idx) == 0:
        raise DataError(f"{csv}: val_fraction {val_fraction:g} of {n_rows} rows leaves no validation image; "
                        f"give val_fraction {1 / max(n_rows, 1):.2g} or more")
    if len(train_idx) < batch_size:
        raise DataError(f"{csv}: {len(train_idx)} training rows (the {n_rows} rows less val_fraction "
                        f"{val_fraction:g}) is fewer than one batch of {batch_size}; lower batch_size or val_fraction")


def read_blocklist(path: Path | str) -> set[str]:
    """File names to leave out of training: a CSV with file_name (and, if present, flagged)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: blocklist not found")
    try:
        df = pd.read_csv(path, dtype=str)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty blocklist (expected a CSV with a file_name column)") from None
    except UnicodeDecodeError:
        raise _bad_byte(path) from None
    except pd.errors.ParserError as e:
        raise _located_parser_error(path, e) from None
    if "file_name" not in df.columns:
        raise DataError(f"{path}:1: blocklist needs a file_name column; got {list(df.columns)}")
    if "flagged" in df.columns:   # the words people write for a boolean, as the settings take them
        words = df["flagged"].fillna("").str.strip().str.lower()
        bad = ~words.isin(BOOL_WORDS)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{path}:{row + 2}: flagged is {df['flagged'].fillna('').iloc[row]!r}; write true or false "
                            f"(or yes/no, 1/0, on/off)")
        df = df[words.map(lambda w: parse_bool(w, "flagged"))]
    return set(df["file_name"].astype(str))


@dataclass
class Split:
    """One split of the layout: its image folder, names, and landmarks where known."""
    name: str
    image_dir: Path
    names: np.ndarray
    landmarks: np.ndarray | None = None   # (N, 971, 2) original pixels
    indices: np.ndarray | None = None     # (N, 30) test point indices

    def image_path(self, i: int) -> Path:
        return self.image_dir / self.names[i]

    @property
    def csv(self) -> Path:
        """The CSV that lists this split's images (line i + 2 is row i)."""
        return self.image_dir.parent / SPLIT_CSV[self.name]


def load_split(data_dir: Path | str, split: str) -> Split:
    """'train' (landmarks.csv) or 'test' (test_points.csv, plus landmarks.csv when ground truth exists)."""
    d = Path(data_dir) / split
    if split == "train":
        names, lm = read_landmarks(d / "landmarks.csv")
        return Split("train", d / "images", names, landmarks=lm)
    if split == "test":
        names, idx = read_test_points(d / "test_points.csv")
        truth = None
        if (d / "landmarks.csv").is_file():
            tnames, truth = read_landmarks(d / "landmarks.csv")
            order = pd.Series(np.arange(len(tnames)), index=tnames).reindex(names).to_numpy()
            if np.isnan(order).any():
                missing = names[np.isnan(order)][0]
                raise DataError(f"{d / 'landmarks.csv'}: no row for test image {str(missing)!r}")
            truth = truth[order.astype(int)]
        return Split("test", d / "images", names, landmarks=truth, indices=idx)
    raise ValueError(f"unknown split {split!r}")


def check_images_exist(split: Split) -> None:
    """Every listed image must exist and be a regular file (a named pipe, socket or device, even behind
    a link, would block the first read for ever), checked up front (not mid-epoch)."""
    if not split.image_dir.is_dir():
        raise DataError(f"{split.image_dir}: image folder not found")
    present = {e.name: e for e in os.scandir(split.image_dir)}
    missing = [i for i, n in enumerate(split.names) if n not in present]
    if missing:
        by_form = {unicodedata.normalize("NFC", name): name for name in present}
        twin = by_form.get(unicodedata.normalize("NFC", str(split.names[missing[0]])))
        if twin is not None:   # NFC in the CSV, NFD on disk: copied from a Mac
            raise DataError(f"{_where(split.csv, missing[0] + 2)}: image {str(split.names[missing[0]])!r} is on disk as "
                            f"{twin!r}, the same name in another Unicode normalization (a copy from a Mac writes "
                            f"NFD); rename the files to match the CSV (convmv -r -f utf8 -t utf8 --nfc --notest {split.image_dir})")
        raise DataError(f"{_where(split.csv, missing[0] + 2)}: image {str(split.names[missing[0]])!r} not found in "
                        f"{split.image_dir} ({len(missing)} listed image(s) missing in all)")
    odd = [i for i, n in enumerate(split.names) if not present[n].is_file()]   # follows links; d_type, no stat
    if odd:
        path = split.image_path(odd[0])
        raise DataError(f"{path}: not a regular file but {_file_kind(path)} (listed at {_where(split.csv, odd[0] + 2)}; "
                        f"{len(odd)} such in all); put the image itself there")


def _file_kind(path: Path) -> str:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "a broken link"
    return next((what for test, what in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
                                          (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
                                          (stat.S_ISDIR, "a folder")) if test(mode)), "not a file")


def exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation (1..8; 1 = as stored) of an open image, read from its header."""
    try:
        value = int(im.getexif().get(EXIF_ORIENTATION, 1))
    except (ValueError, TypeError, OSError, SyntaxError):   # a damaged EXIF block: the pixels as stored
        return 1
    return value if 1 <= value <= 8 else 1


def open_image(path: Path | str) -> Image.Image:
    """An image as the labels see it: turned upright by its EXIF orientation, as cv2.imread (the
    organizers' loader) does. Only the rare oriented image is decoded here; the others stay lazy
    (the cache's JPEG draft still applies). An image of more than 8 bits per channel (a 16-bit PNG)
    is a DataError: converting it to 8-bit RGB would clip it to white."""
    im = Image.open(path)
    if im.mode not in EIGHT_BIT_MODES:
        im.close()
        raise DataError(f"{path}: a {im.mode} image (more than 8 bits per channel or not a photo); "
                        f"the contest's images are 8-bit JPEGs")
    if exif_orientation(im) != 1:
        with im:
            return ImageOps.exif_transpose(im)
    return im


def _image_size(path: str) -> tuple[int, int, int] | str:
    """(width, height as displayed, EXIF orientation) from the header, or what is wrong. A JPEG must end
    with its end-of-image marker: a truncated file (a broken download or unzip) is caught here without
    decoding it."""
    try:
        with Image.open(path) as im:
            if im.format != "JPEG":
                return f"not a JPEG ({im.format}, {im.mode})"
            if im.mode not in EIGHT_BIT_MODES:
                return f"a {im.mode} JPEG; the contest's images are 8-bit"
            orientation = exif_orientation(im)
            w, h = im.size
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 1024))
            if b"\xff\xd9" not in f.read():
                return "truncated JPEG (no end-of-image marker)"
        return (h, w, orientation) if orientation >= 5 else (w, h, orientation)   # 5..8 turn it a quarter
    except Image.DecompressionBombError as e:
        return f"image too large to decode safely: {e}"
    except (UnidentifiedImageError, OSError) as e:
        return f"unreadable image: {e}"


def image_sizes(paths: list[str], workers: int | None = None, desc: str = "image headers",
                orientations: bool = False) -> np.ndarray:
    """(N, 2) width, height as displayed (EXIF orientation applied) from the image headers, over a
    process pool; with orientations=True, (N, 3) with each image's EXIF orientation. Bad files raise
    DataError."""
    workers = workers or os.cpu_count() or 1
    chunk = max(1, min(256, len(paths) // (workers * 4) or 1))
    if workers > 1 and len(paths) > 200:
        with process_pool(workers) as ex:
            results = list(bar(ex.map(_image_size, paths, chunksize=chunk), total=len(paths), desc=desc))
    else:
        results = [_image_size(p) for p in bar(paths, desc=desc, disable=len(paths) < 200)]
    for p, r in zip(paths, results):
        if isinstance(r, str):
            raise DataError(f"{p}: {r}")
    out = np.array(results, dtype=np.int64).reshape(-1, 3)
    return out if orientations else out[:, :2]


def _absurd(lm: np.ndarray, size: np.ndarray) -> np.ndarray:
    """(N, 971) points more than FAR_OUTSIDE image sizes outside their image."""
    return ((lm < -FAR_OUTSIDE * size) | (lm > (FAR_OUTSIDE + 1) * size)).any(-1)


def label_ranges(split: Split, sizes: np.ndarray, chunk: int = CHUNK_ROWS) -> dict:
    """check()'s label statistics, CHUNK_ROWS rows at a time (no full-size boolean temporaries). Labels
    that are no annotation of their image (far outside it) are a DataError on their line; the cache
    build runs this too, with the sizes it decoded, so a run that skipped the check is covered. Rows
    with most of their points outside their image (another image's labels, or a resized or replaced
    image) are counted, the first named: wrong labels, which the EDA flags for the blocklist."""
    lm_all = split.landmarks
    r = {"x_range": [np.inf, -np.inf], "y_range": [np.inf, -np.inf], "points_outside_image": 0,
         "images_with_points_outside": 0, "rows_with_negative_coordinates": 0, "rows_beyond_an_image_size": 0,
         "rows_mostly_outside": 0, "first_mostly_outside": None}
    for i in range(0, len(lm_all), chunk):
        lm, size = lm_all[i:i + chunk], sizes[i:i + chunk, None, :]
        # Slightly outside is real (the 2020 data: -22 .. 1308). Beyond an image size past an edge a
        # label is wrong for this image (another image's labels, say): the EDA flags such rows for the
        # blocklist. Beyond FAR_OUTSIDE image sizes it is no annotation at all (1e30, another unit):
        # one such value blows the metric up, so nothing starts.
        absurd = _absurd(lm, size)
        rows = np.flatnonzero(absurd.any(1))
        if len(rows):
            j = rows[0]
            p = int(np.flatnonzero(absurd[j])[0])
            w, h = sizes[i + j]
            n_bad = sum(int(_absurd(lm_all[k:k + chunk], sizes[k:k + chunk, None, :]).any(1).sum())
                        for k in range(i, len(lm_all), chunk))
            raise DataError(f"{_where(split.csv, i + j + 2)}: point {p} at ({lm[j, p, 0]:g}, {lm[j, p, 1]:g}) lies more "
                            f"than {FAR_OUTSIDE} image sizes outside its {w}x{h} image {str(split.names[i + j])!r} "
                            f"({n_bad} such row(s))")
        outside = ((lm < -0.5) | (lm > size - 0.5)).any(-1)
        mostly = np.flatnonzero(outside.mean(1) > MOSTLY_OUTSIDE)
        if len(mostly) and r["first_mostly_outside"] is None:
            j = mostly[0]
            w, h = sizes[i + j]
            r["first_mostly_outside"] = (f"{_where(split.csv, i + j + 2)}: {int(outside[j].sum())} of {N_POINTS} points "
                                         f"outside the {w}x{h} image {str(split.names[i + j])!r}")
        r["rows_mostly_outside"] += len(mostly)
        for key, axis in (("x_range", 0), ("y_range", 1)):
            r[key] = [min(r[key][0], float(lm[..., axis].min())), max(r[key][1], float(lm[..., axis].max()))]
        r["points_outside_image"] += int(outside.sum())
        r["images_with_points_outside"] += int(outside.any(1).sum())
        r["rows_with_negative_coordinates"] += int((lm < 0).any((1, 2)).sum())
        r["rows_beyond_an_image_size"] += int(((lm < -size) | (lm > 2 * size)).any((1, 2)).sum())
    return r


def check(data_dir: Path | str, workers: int | None = None, splits: tuple[Split, Split] | None = None) -> dict:
    """Validate the whole layout; return counts and ranges. Raises DataError on the first problem.
    `splits`: (train, test) already parsed by load_split, so that they are not parsed again."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data folder not found")
    report: dict = {}
    train, test = splits or (load_split(data_dir, "train"), load_split(data_dir, "test"))
    check_images_exist(train)
    check_images_exist(test)
    for split in (train, test):
        sizes = image_sizes([str(split.image_path(i)) for i in range(len(split.names))], workers,
                            desc=f"{split.name} headers", orientations=True)
        oriented, sizes = int((sizes[:, 2] != 1).sum()), sizes[:, :2]
        small = np.flatnonzero(sizes.min(1) < MIN_SIDE)
        if len(small):
            i = small[0]
            raise DataError(f"{_where(split.csv, i + 2)}: image {str(split.names[i])!r} is {sizes[i, 0]}x{sizes[i, 1]} px, "
                            f"too small to hold a face (at least {MIN_SIDE} px a side; {len(small)} such image(s))")
        r = {"images": len(split.names),
             "width": [int(sizes[:, 0].min()), int(sizes[:, 0].max())],
             "height": [int(sizes[:, 1].min()), int(sizes[:, 1].max())], "exif_oriented": oriented}
        if split.landmarks is not None:
            r |= label_ranges(split, sizes)
        report[split.name] = r
    report["test"]["ground_truth"] = test.landmarks is not None
    return report


def format_report(report: dict) -> str:
    lines = []
    for split in ("train", "test"):
        r = report[split]
        lines.append(f"{split}: {r['images']} images, width {r['width'][0]}..{r['width'][1]} px, "
                     f"height {r['height'][0]}..{r['height'][1]} px")
        if r.get("exif_oriented"):
            lines.append(f"  {r['exif_oriented']} images carry an EXIF orientation: they are read turned upright, as "
                         f"the organizers' cv2.imread reads them, and their labels taken to be on the upright image")
        if "x_range" in r:
            lines.append(f"  landmarks x {r['x_range'][0]:.0f}..{r['x_range'][1]:.0f}, "
                         f"y {r['y_range'][0]:.0f}..{r['y_range'][1]:.0f}; {r['points_outside_image']} points "
                         f"outside their image in {r['images_with_points_outside']} images (a little outside is normal); "
                         f"{r['rows_with_negative_coordinates']} rows with negative coordinates; "
                         f"{r['rows_beyond_an_image_size']} rows with points beyond an image size outside "
                         f"(wrong labels: the EDA notebook flags them)")
            if r["rows_mostly_outside"]:
                lines.append(f"  {r['rows_mostly_outside']} rows with most of their points outside their image, first "
                             f"{r['first_mostly_outside']}: not labels of that image (another image's, or the image "
                             f"resized or replaced): the EDA flags them; train with its blocklist to leave them out")
    lines.append(f"test ground truth (test/landmarks.csv): {'yes' if report['test']['ground_truth'] else 'no'}")
    return "\n".join(lines)


UNPACKED_MARKER = ".unpacked"   # written last by unpack_contest: its presence means the unpack finished


def unpack_contest(zip_path: Path | str, data_dir: Path | str, test_points: Path | str | None = None,
                   scratch: Path | str | None = None) -> Path:
    """Unpack the contest zip into data_dir (train/, test/), once.

    The zip is first copied whole to local scratch (reading many small files from Google
    Drive is very slow, one large file is fast), then unpacked and the copy removed, whether the
    unpack succeeded or not (on Colab it is 13.5 GB of the local disk). A marker file written last,
    after test_points.csv is in place, says the unpack finished: an interrupted one is resumed (files
    already there with the right size are kept, when the interrupted one was of the same zip). Members
    that would land outside data_dir (absolute paths, '..') are refused, and so is a zip holding two
    data sets. A data_dir holding the synthetic demo set has it replaced (said in one line): the two
    are never mixed. The 2020 archive shipped test_points.csv separately: pass it, or leave it next to
    the zip, and it is put into data_dir/test/; a given one wins over the zip's own (said).
    The marker records the sources (the zip's path, size and mtime; the test points' SHA-256): a rerun
    with another zip unpacks it again in place of the old data, and one with other test points puts
    them in, each said in one line.
    """
    zip_path, data_dir = Path(zip_path), Path(data_dir)
    if not zip_path.is_file():
        raise DataError(f"{zip_path}: contest zip not found")
    given = Path(test_points) if test_points else None
    if given is not None and not given.is_file():
        raise DataError(f"{given}: test_points.csv not found (test_points_path)")
    dest = data_dir / "test" / "test_points.csv"
    marker = data_dir / UNPACKED_MARKER
    zip_id = _zip_identity(zip_path)
    done = _read_marker(marker)
    if done is not None:
        if done.get("zip") in (None, zip_id):   # None: a marker of an older landmarklib
            digest = file_digest(given) if given is not None else None
            if digest is not None and done.get("test_points") != digest:
                put_test_points(given, dest, f"using {given}, not the test_points.csv it held (test_points_path "
                                              f"changed since the unpack)")
                marker.write_text(json.dumps(done | {"test_points": digest}) + "\n")
            return data_dir
        print(f"{data_dir}: unpacked from {done['zip']['path']} before; unpacking {zip_path} again into it "
              f"(the old data replaced, never mixed)")
        marker.unlink()
        _remove(data_dir, ("train", "test"))
    source = given or zip_path.parent / "test_points.csv"
    started = data_dir / ".unpacking"   # which zip an unfinished unpack was of: another's files are not kept
    if started.is_file() and started.read_text().strip() != json.dumps(zip_id):
        print(f"{data_dir}: an unfinished unpack of another zip is there; unpacking {zip_path} in its place")
        _remove(data_dir, ("train", "test"))
    if is_synthetic(data_dir):
        print(f"{data_dir}: replacing the synthetic demo set there with the contest data from {zip_path.name}")
        _remove(data_dir, ("train", "test", "SYNTHETIC.json"))
    local = Path(scratch or tempfile.gettempdir()) / zip_path.name
    is_copy = local.resolve() != zip_path.resolve()
    try:
        if is_copy:
            _copy_to_scratch(zip_path, local)
        try:
            with zipfile.ZipFile(local) as zf:
                in_zip = "test/test_points.csv" in _extract(zf, zip_path, data_dir, started, zip_id)
        except (zipfile.BadZipFile, EOFError, zlib.error) as e:
            raise DataError(f"{zip_path}: not a readable zip file ({e}); download it again") from None
    finally:
        if is_copy:
            local.unlink(missing_ok=True)
    if given is not None or not in_zip:   # a given file wins over the zip's own, and says so
        if not source.is_file():
            raise DataError(f"{dest}: missing, and no test_points.csv given or found next to {zip_path}")
        put_test_points(source, dest, f"using {source}, not the test_points.csv inside {zip_path.name} (a given "
                                        f"file wins)" if in_zip else None)
    identity = {"zip": zip_id, "test_points": "in the zip" if given is None and in_zip else file_digest(source)}
    marker.write_text(json.dumps(identity) + "\n")   # last: the unpack is whole from here on
    started.unlink(missing_ok=True)
    return data_dir


def _zip_identity(zip_path: Path) -> dict:
    """Which zip data_dir came from: its path, size and mtime (hashing 13.5 GB on Drive each run is too
    slow; a zip downloaded again has a new mtime, and is unpacked again)."""
    st = zip_path.stat()
    return {"path": str(zip_path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _remove(data_dir: Path, parts: tuple[str, ...]) -> None:
    """data_dir's parts (folders or files) gone, where they are."""
    for part in parts:
        shutil.rmtree(data_dir / part) if (data_dir / part).is_dir() else (data_dir / part).unlink(missing_ok=True)


def _read_marker(marker: Path) -> dict | None:
    """The sources an unpack came from (None: no finished unpack); {} for an older marker (the zip's
    name only), which is trusted as it was."""
    if not marker.is_file():
        return None
    try:
        done = json.loads(marker.read_text())
    except ValueError:
        return {}
    return done if isinstance(done, dict) else {}


def put_test_points(source: Path, dest: Path, said: str | None) -> None:
    """`source` copied to `dest` (atomically), and `said` printed in one line when given."""
    if said:
        print(f"{dest}: {said}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        shutil.copyfile(source, tmp)


def _copy_to_scratch(zip_path: Path, local: Path) -> None:
    """The zip copied whole to local disk, with its mtime: a copy is trusted only while both the size
    and the mtime match (a re-downloaded zip of the same size is copied again)."""
    st = zip_path.stat()
    kept = local.stat() if local.is_file() else None
    if kept is not None and (kept.st_size, kept.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
        return
    local.parent.mkdir(parents=True, exist_ok=True)
    local.unlink(missing_ok=True)
    check_free_space(local.parent, st.st_size, f"copying {zip_path.name}")
    with atomic_path(local) as tmp:
        shutil.copy2(zip_path, tmp)


def _extract(zf, zip_path: Path, data_dir: Path, started: Path, zip_id: dict) -> list[str]:
    """The data set's members written into data_dir (files already there whole are kept), once every
    target is known to lie inside it; `started` records which zip (`zip_id`), first. Returns the
    members' names relative to data_dir."""
    name = {i.filename: i.filename.replace("\\", "/") for i in zf.infolist()}   # old Windows tools: a\b is a/b
    csvs = [n for n in name.values() if n == "train/landmarks.csv" or n.endswith("/train/landmarks.csv")]
    if not csvs:
        raise DataError(f"{zip_path}: no train/landmarks.csv inside the zip")
    if len(csvs) > 1:
        raise DataError(f"{zip_path}: holds {len(csvs)} data sets ({', '.join(csvs[:3])}); unpack the one you "
                        f"mean by hand, or make a zip holding one")
    prefix = csvs[0][: -len("train/landmarks.csv")]
    members = [i for i in zf.infolist() if name[i.filename].startswith(prefix) and not name[i.filename].endswith("/")]
    rel = {i.filename: name[i.filename][len(prefix):] for i in members}
    root = data_dir.resolve()
    for info in members:   # every member checked before anything is written
        _check_member(info, zip_path)
        target = (data_dir / rel[info.filename]).resolve()
        if name[info.filename].startswith("/") or ".." in Path(name[info.filename]).parts or root not in target.parents:
            raise DataError(f"{zip_path}: member {info.filename!r} would be written outside {data_dir}; "
                            f"refusing to unpack this zip")
    data_dir.mkdir(parents=True, exist_ok=True)
    todo = [i for i in members if not _unpacked(data_dir / rel[i.filename], i.file_size)]
    check_free_space(data_dir, sum(i.file_size for i in todo), f"unpacking {zip_path.name}")
    started.write_text(json.dumps(zip_id) + "\n")
    for info in bar(todo, desc="unzip", unit="file"):   # files already there whole: from an interrupted unpack
        target = data_dir / rel[info.filename]
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, atomic_path(target) as tmp, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return list(rel.values())


ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}   # what zipfile reads
DEFLATE64 = 9


def _check_member(info: zipfile.ZipInfo, zip_path: Path) -> None:
    """A member this unpack can write as a plain file, or one line on what it is and what to do."""
    what = None
    if stat.S_ISLNK(info.external_attr >> 16):
        what = "is a symbolic link (the contest's zip holds none; a link could point outside data_dir)"
    elif info.flag_bits & 0x1:
        what = "is encrypted; unpack the zip with its password yourself and give data_dir"
    elif info.compress_type == DEFLATE64:
        what = ("is compressed with Deflate64 (Windows Explorer's zip of large files), which Python cannot read; "
                "unpack it with 7-Zip or unzip and give data_dir, or zip it again with another tool")
    elif info.compress_type not in ZIP_METHODS:
        what = (f"uses compression method {info.compress_type}, which Python cannot read; unpack it with 7-Zip and "
                f"give data_dir")
    if what:
        raise DataError(f"{zip_path}: member {info.filename!r} {what}; nothing unpacked")


def _unpacked(target: Path, size: int) -> bool:
    return target.is_file() and target.stat().st_size == size


def check_free_space(folder: Path, need: int, what: str) -> None:
    """Stop before a step that would fill the disk half-way: needed, free and where, in one line."""
    free = shutil.disk_usage(folder).free
    if need > free:
        raise DataError(f"{folder}: {what} needs {need / 2**30:.2f} GiB, {free / 2**30:.2f} GiB free there; "
                        f"free some space or choose another folder")


def footprint(data_dir: Path | str, cache_dir: Path | str | None = None) -> dict[str, int]:
    """Bytes on disk of the data set's parts and of each cache folder (for the data notebook)."""
    def size(folder: Path) -> int:
        return sum(e.stat().st_size for e in os.scandir(folder) if e.is_file()) if folder.is_dir() else 0
    d = Path(data_dir)
    out = {"train/images": size(d / "train" / "images"), "test/images": size(d / "test" / "images"),
           "csv files": size(d / "train") + size(d / "test")}
    caches = Path(cache_dir) if cache_dir else d / "cache"
    if caches.is_dir():
        out |= {f"cache/{c.name}": size(c) for c in sorted(caches.iterdir()) if c.is_dir()}
    return out


def has_layout(data_dir: Path | str) -> bool:
    d = Path(data_dir)
    return (d / "train" / "landmarks.csv").is_file() and (d / "test" / "test_points.csv").is_file()


def is_synthetic(data_dir: Path | str) -> bool:
    """Whether data_dir holds the synthetic demo set (synth writes SYNTHETIC.json beside its splits)."""
    return (Path(data_dir) / "SYNTHETIC.json").is_file()


_digests: dict = {}   # (path, device, inode, size, mtime, ctime) -> digest: one hash per file per process


def file_digest(path: Path | str) -> str:
    """The SHA-256 of a file's whole content (about 1.3 GB/s here; the 2020 landmarks.csv, 3 GB, in a
    few seconds): an edit that keeps the length and the mtime changes it. Remembered for this process
    while the file's stat (ctime included, which no tool can set back) is unchanged."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _digests:
        h = hashlib.sha256()
        with open(path, "rb") as f, bar(total=st.st_size, desc=f"hash {Path(path).name}", unit="B", unit_scale=True,
                                        disable=st.st_size < 1 << 30) as b:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
                b.update(len(block))
        _digests[key] = h.hexdigest()
    return _digests[key]


def fingerprint(data_dir: Path | str) -> dict:
    """The identity of a data set, by content (so it survives re-unpacking and moving, and no edit
    escapes it): the SHA-256 of train/landmarks.csv, the number of training images, and whether it
    is the demo set."""
    csv = Path(data_dir) / "train" / "landmarks.csv"
    if not csv.is_file():
        raise DataError(f"{csv}: not found (data_dir {data_dir} holds no contest layout)")
    return {"landmarks_csv_sha256": file_digest(csv)[:32],
            "train_images": len(os.listdir(Path(data_dir) / "train" / "images")),
            "synthetic": is_synthetic(data_dir)}


@cli
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m landmarklib.data", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="validate the layout and print counts")
    c.add_argument("--data-dir", required=True, type=Path, help="the contest layout folder")
    c.add_argument("--workers", type=int, default=None, help="processes reading image headers (default: all cores)")
    args = p.parse_args(argv)
    report = check(args.data_dir, args.workers)
    print(format_report(report))
    print("layout OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
