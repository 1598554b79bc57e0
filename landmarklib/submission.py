"""The contest submission file: writing it exactly, and checking one.

    python -m landmarklib.submission check SUB.csv --data-dir D
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_path
from .csvfiles import N_QUERY, read_test_points
from .errors import DataError, cli
from .metric import select_points

# No pixel coordinate is this far out (the 2020 images are at most ~1,300 px a side): past it a value
# is a unit or export error, and its square would overflow the score.
MAX_COORD = 100_000
SUBMISSION_COLUMNS = ["file_name"] + [f"Point_M{i}_{c}" for i in range(N_QUERY) for c in "XY"]


def bad_value(values: np.ndarray) -> tuple[int, int, str] | None:
    """The first (row, column, why) of (N, 60) submission values that no checker accepts: not a finite
    number, or beyond ±MAX_COORD px. What write_submission refuses to write and read_submission refuses."""
    finite = np.isfinite(values)
    for bad, why in ((~finite, "not a finite number"),
                     (finite & (np.abs(np.where(finite, values, 0)) > MAX_COORD),
                      f"not a pixel coordinate (beyond ±{MAX_COORD:g} px)")):
        if bad.any():
            r, c = np.argwhere(bad)[0]
            return int(r), int(c), f"{why}; {int(bad.sum())} such value(s)"
    return None


def write_submission(path: Path | str, names: np.ndarray, points: np.ndarray, indices: np.ndarray,
                     source: str = "the predictions") -> Path:
    """Write `points` (N, 971, 2, original pixels, rows in test_points.csv order) as a submission.

    Values are rounded to the nearest integer (the organizers' baseline truncated with
    astype(int), a known loss of ~0.4 MSE). Written to a temp file, then renamed. A value the
    checker would refuse (bad_value: a diverged model's) is a DataError naming `source` (the
    checkpoints), and nothing is written.
    """
    path = Path(path)
    sel = select_points(points, indices).reshape(len(names), -1)
    bad = bad_value(sel)
    if bad is not None:
        r, c, why = bad
        raise DataError(f"{source}: predicts {sel[r, c]:g} for {str(names[r])!r} column {SUBMISSION_COLUMNS[c + 1]!r}: "
                        f"{why} (a diverged model?); {path} not written")
    df = pd.DataFrame(np.rint(sel).astype(np.int64), columns=SUBMISSION_COLUMNS[1:])
    df.insert(0, "file_name", np.asarray(names))
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


def read_submission(path: Path | str, test_points: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """Validate `path` against test_points.csv; return (names, points (N, 30, 2))."""
    path = Path(path)
    names, _ = read_test_points(test_points)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline().rstrip("\r\n").split(",")
    except UnicodeDecodeError:
        raise DataError(f"{path}:1: not UTF-8 text (is this the submission file?)") from None
    if header != SUBMISSION_COLUMNS:
        raise DataError(f"{path}:1: header must be file_name,Point_M0_X,Point_M0_Y,...,Point_M29_Y "
                        f"({len(SUBMISSION_COLUMNS)} comma-separated columns); got {len(header)} columns "
                        f"starting {header[:2]}")
    try:
        df = pd.read_csv(path, header=0, names=SUBMISSION_COLUMNS, dtype={"file_name": str}, engine="c",
                         skip_blank_lines=False)
    except pd.errors.ParserError as e:
        raise DataError(f"{path}: {e}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text (is this the submission file?)") from None
    blank = np.flatnonzero(df.isna().all(axis=1).to_numpy())
    if len(blank):
        raise DataError(f"{path}:{blank[0] + 2}: blank line (every line after the header is one test image's "
                        f"row; {len(blank)} blank line(s) in all)")
    if len(df) != len(names):
        raise DataError(f"{path}: {len(df)} rows, expected {len(names)} (one per line of {test_points})")
    got = df["file_name"].to_numpy(dtype=str)
    wrong = np.flatnonzero(got != names)
    if len(wrong):
        r = wrong[0]
        raise DataError(f"{path}:{r + 2}: file_name {str(got[r])!r}, expected {str(names[r])!r} "
                        f"(rows must follow test_points.csv order)")
    flags = [c for c in SUBMISSION_COLUMNS[1:] if pd.api.types.is_bool_dtype(df[c])]
    if flags:
        raise DataError(f"{path}:2: column {flags[0]!r} holds true/false, not pixel coordinates "
                        f"({len(flags)} such column(s))")
    values = df.iloc[:, 1:].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = bad_value(values)
    if bad is not None:
        r, c, why = bad
        cell = df.iat[r, c + 1]
        shown = f"{cell:g}" if isinstance(cell, (float, np.floating)) else repr(cell)
        raise DataError(f"{path}:{r + 2}: column {SUBMISSION_COLUMNS[c + 1]!r} is {shown}, {why}")
    return names, values.reshape(len(names), N_QUERY, 2)


@cli
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m landmarklib.submission", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="validate a submission against test_points.csv")
    c.add_argument("submission", type=Path)
    c.add_argument("--data-dir", required=True, type=Path)
    a = p.parse_args(argv)
    names, _ = read_submission(a.submission, a.data_dir / "test" / "test_points.csv")
    print(f"{a.submission}: OK, {len(names)} rows x {N_QUERY} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
