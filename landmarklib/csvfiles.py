"""The contest's CSV files (docs/FORMAT.md): train/landmarks.csv, test/test_points.csv, a blocklist.

Every problem is a DataError whose message starts with `file:line:`, so a user can open the file at
the right place.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError
from .layout import N_POINTS
from .progress import bar
from .settings import BOOL_WORDS, parse_bool

N_QUERY = 30
LANDMARK_COLUMNS = ["file_name"] + [f"Point_{i}_{c}" for i in range(N_POINTS) for c in "XY"]
TEST_COLUMNS = ["file_name", "point_index_list"]
LANDMARK_DTYPES = {c: np.float32 for c in LANDMARK_COLUMNS[1:]} | {"file_name": str}   # parsed straight to float32
CHUNK_ROWS = 5_000   # rows parsed at a time: the parser holds ~0.1 GB of text and tokens per chunk
PARSE_BAR_ROWS = 20_000   # a parse this long (about 4 s) shows a progress bar: the contest's takes a minute


def where(path: Path | str, line: int | None = None) -> str:
    return f"{path}:{line}" if line is not None else str(path)


def _bad_byte(path: Path) -> DataError:
    """Slow path, only on bad input: the first line that is not UTF-8, and the byte."""
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                return DataError(f"{where(path, line_no)}: byte 0x{line[e.start]:02x} at column {e.start + 1} is not "
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
        raise DataError(f"{where(path, 1)}: header has {len(header)} columns, expected {len(expected)} "
                        f"({expected[0]!r}, {expected[1]!r}, ...; separator {sep!r})")
    bad = next(i for i, (a, b) in enumerate(zip(header, expected)) if a != b)
    raise DataError(f"{where(path, 1)}: header column {bad + 1} is {header[bad]!r}, expected {expected[bad]!r}")


def _located_parser_error(path: Path, err: Exception) -> DataError:
    m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
    if m:
        expected, line, saw = m.groups()
        return DataError(f"{where(path, int(line))}: {saw} fields, expected {expected} "
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
                raise DataError(f"{where(path, first_line + r)}: blank line (every row is a file_name and "
                                f"{len(LANDMARK_COLUMNS) - 1} coordinates)")
            col = int(np.flatnonzero(~np.isfinite(row))[0]) + 1 if not np.isfinite(row).all() else 0
            raise DataError(f"{where(path, first_line + r)}: missing or non-finite value in column "
                            f"{LANDMARK_COLUMNS[col]!r} (expected {len(LANDMARK_COLUMNS)} tab-separated fields)")
        start = first_line - 2
        if start + len(chunk) > len(out):   # a last line without its newline
            out = np.concatenate([out, np.empty((start + len(chunk) - len(out), N_POINTS, 2), out.dtype)])
        if out.dtype == np.int16 and not is_int16(values):
            print(f"{where(path, first_line)}: labels that are not whole numbers from here on (or beyond "
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
        raise DataError(f"{where(path, int(wanted[-1]))}: no such line (the file has fewer rows)")
    values = df.iloc[:, 1:].to_numpy(dtype=np.float32).reshape(-1, N_POINTS, 2)
    bad = np.flatnonzero(~np.isfinite(values).all(axis=(1, 2)))
    if len(bad):
        raise DataError(f"{where(path, int(wanted[bad[0]]))}: missing or non-finite value")
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
    return DataError(f"{where(path, first_line + r)}: column {LANDMARK_COLUMNS[c + 1]!r} is "
                     f"{text.iat[r, c + 1]!r}, not a number")


def _check_unique(path: Path, names: np.ndarray) -> None:
    dup = pd.Series(names).duplicated(keep="first").to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero(names == names[i])[0])
        raise DataError(f"{where(path, i + 2)}: duplicate file_name {str(names[i])!r} (first on line {first + 2}); "
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
            raise DataError(f"{where(path, line)}: point_index_list {shown!r} is not a list of integers")
        if len(lst) != N_QUERY:
            raise DataError(f"{where(path, line)}: point_index_list has {len(lst)} indices, expected {N_QUERY}")
        bad = [v for v in lst if not 0 <= v < N_POINTS]
        if bad:
            raise DataError(f"{where(path, line)}: index {bad[0]} outside 0..{N_POINTS - 1}")
        if len(set(lst)) != N_QUERY:
            raise DataError(f"{where(path, line)}: point_index_list repeats an index")
        indices[r] = lst
    names = df["file_name"].to_numpy(dtype=str)
    _check_unique(path, names)
    return names, indices



def count_rows(path: Path | str) -> int:
    """The data rows of a CSV with a header, from its newlines (about a second per GB), without parsing it."""
    path = Path(path)
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 1))
        unterminated = f.read(1) not in (b"\n", b"")
    return max(0, _count_lines(path) - 1 + unterminated)


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
