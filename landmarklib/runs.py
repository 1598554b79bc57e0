"""Every run in a runs folder at a glance, and the best ones to submit.

    python -m landmarklib.runs runs/            the table, best validation MSE first

A run is a folder holding config.json (written when it starts) and history.csv (after each epoch):
runs/<run> or, an ablation's, runs/ablation/<run>. Only those two files are read, so a folder of
hundreds of runs on Drive lists in seconds; a run whose files cannot be read is a damaged row,
never an error.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .config import DEFAULTS, PLACES
from .errors import DataError, cli

COLUMNS = ["run", "best_mse_px", "best_epoch", "last_mse_px", "epochs", "state", "data", "val_fraction", "settings",
           "last_write"]


def run_dirs(root: Path | str) -> list[Path]:
    """The runs under `root`, one to three folders down (a run; a grid's run; ./run_all.sh's
    runs/demo/ablation/<run>), never deeper: a data set's thousands of images are not walked."""
    root = Path(root)
    return sorted({p.parent for depth in (1, 2, 3) for p in root.glob("*/" * depth + "config.json")})


def differences(cfg: dict) -> str:
    """The settings of a run's config that differ from the defaults, as `name value, ...` (the recipe
    spelled out)."""
    keys = [k for k in DEFAULTS if k not in PLACES and k in cfg and cfg[k] != DEFAULTS[k]
            and (k != "drop_at" or cfg.get("schedule") == "drop")]   # drop epochs mean nothing without drops
    return ", ".join(f"{k} {cfg[k]}" for k in keys) or "the defaults"


def _running(run: Path) -> bool:
    """Whether a live process holds the run's lock (atomic.run_lock: an flock, gone with its process)."""
    try:
        import fcntl
    except ImportError:   # not POSIX: no locks to see
        return False
    try:
        with open(run / ".lock") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def run_row(run: Path, root: Path) -> dict:
    """One run's row of the table (COLUMNS); a damaged run's state says what is wrong."""
    files = [p for p in (run / "config.json", run / "history.csv") if p.is_file()]
    row = {"run": run.relative_to(root).as_posix(),
           "last_write": pd.Timestamp(max(p.stat().st_mtime for p in files), unit="s").floor("s")}
    try:
        cfg = json.loads((run / "config.json").read_text(encoding="utf-8"))
        if not isinstance(cfg, dict) or not isinstance(cfg.get("epochs"), int):
            raise ValueError("config.json holds no run's settings")
        history = (pd.read_csv(run / "history.csv") if (run / "history.csv").is_file()
                   else pd.DataFrame({"epoch": [], "val_mse_px": []}))
        val = pd.to_numeric(history["val_mse_px"], errors="raise").to_numpy(dtype=float)
        epochs = pd.to_numeric(history["epoch"], errors="raise").to_numpy(dtype=int)
    except (OSError, ValueError, KeyError, TypeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        return row | {"state": f"damaged: {str(e).splitlines()[0][:80] if str(e) else type(e).__name__}"}
    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    done, planned = len(val), cfg["epochs"]
    state = ("running" if _running(run) else "finished" if done >= planned
             else "resumable" if (run / "last.pt").is_file() else "no epoch yet")
    best = int(np.nanargmin(val)) if done and not np.isnan(val).all() else None
    return row | {"best_mse_px": round(float(val[best]), 3) if best is not None else np.nan,
                  "best_epoch": epochs[best] if best is not None else pd.NA,
                  "last_mse_px": round(float(val[-1]), 3) if done else np.nan, "epochs": f"{done}/{planned}", "state": state,
                  "data": f"{'demo' if data.get('synthetic') else 'contest'} {str(data.get('landmarks_csv_sha256', '?'))[:8]}",
                  "val_fraction": cfg.get("val_fraction"), "settings": differences(cfg)}


def table(root: Path | str) -> pd.DataFrame:
    """Every run under `root` (run_row), best validation MSE first; damaged and untrained runs last."""
    root = Path(root)
    rows = [run_row(run, root) for run in run_dirs(root)]
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.sort_values(["best_mse_px", "run"], na_position="last", ignore_index=True)


def histories(root: Path | str, runs: list[str]) -> dict[str, pd.DataFrame]:
    """history.csv of each of `runs` (table's run column), by name."""
    return {run: pd.read_csv(Path(root) / run / "history.csv") for run in runs}


def best_runs(root: Path | str, k: int, df: pd.DataFrame | None = None) -> list[Path]:
    """The k finished runs with the best validation MSE that share the best run's data and validation
    split (what an ensemble averages must be comparable); the others are left out, said in one line.
    Fewer than k such runs is a DataError saying what the folder holds. `df`: table(root), when the
    caller has it already (on Drive, reading every run's files twice is slow)."""
    df = table(root) if df is None else df
    finished = df[(df["state"] == "finished") & df["best_mse_px"].notna()]
    if finished.empty:
        raise DataError(f"{root}: no finished run to choose from (best:{k}); train one, or give run_dirs")
    ref = finished.iloc[0]
    same = finished[(finished["data"] == ref["data"]) & (finished["val_fraction"] == ref["val_fraction"])]
    other = len(finished) - len(same)
    if len(same) < k:
        raise DataError(f"{root}: best:{k} needs {k} finished runs on the data and validation split of the best one "
                        f"({ref['run']}: {ref['data']}, val_fraction {ref['val_fraction']}); {len(same)} are"
                        + (f", and {other} more were trained on other data or another split" if other else "")
                        + "; ask for fewer, or give run_dirs")
    if other:
        print(f"best:{k}: left out {other} finished run(s) trained on other data or another split than {ref['run']}")
    chosen = same.head(k)
    for _, r in chosen.iterrows():
        print(f"  {r['run']}: best validation MSE {r['best_mse_px']:.3f} px² at epoch {r['best_epoch']}")
    return [Path(root) / run for run in chosen["run"]]


@cli
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m landmarklib.runs", description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="a runs folder (runs/, or MyDrive/landmarklib/runs in Colab)")
    root = p.parse_args(argv).root
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        print(table(root).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
