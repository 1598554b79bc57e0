"""Scoring a submission file against the test ground truth (the metric itself: metric.py).

    python -m landmarklib.score SUB.csv --data-dir D      (needs D/test/landmarks.csv)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .data import load_split
from .errors import DataError, cli
from .metric import mse_per_image, select_points
from .submission import read_submission


def score_submission(submission: Path | str, data_dir: Path | str) -> float:
    data_dir = Path(data_dir)
    truth_csv = data_dir / "test" / "landmarks.csv"
    if not truth_csv.is_file():
        raise DataError(f"{truth_csv}: no test ground truth to score against (the synthetic set writes it; "
                        f"the contest does not ship it)")
    test = load_split(data_dir, "test")
    _, pred = read_submission(submission, data_dir / "test" / "test_points.csv")
    return float(mse_per_image(pred, select_points(test.landmarks, test.indices)).mean())


@cli
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m landmarklib.score", description=__doc__.splitlines()[0])
    p.add_argument("submission", type=Path)
    p.add_argument("--data-dir", required=True, type=Path)
    a = p.parse_args(argv)
    mse = score_submission(a.submission, a.data_dir)
    print(f"MSE {mse:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
