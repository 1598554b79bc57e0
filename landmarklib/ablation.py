"""Ablations: run train.ipynb once per configuration and seed (papermill), then compare.

One knob at a time against a base recipe, so a plot says which change gave the gain.
Runs go to <runs_root>/<recipe name>; a run already finished is not run again.
"""
from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path

import pandas as pd

from .atomic import atomic_path
from .config import check_same_recipe, notebook_config, run_folder_name
from .errors import DataError
from .progress import bar


ADAMW_DECAY = 0.05
BLOCKLIST = "<blocklist>"   # in a grid: the blocklist= given to grid() (bad_annotations.csv from the EDA)

# Each grid is a table of arms: label -> overrides of the base recipe, one knob at a time. Epochs in
# drop_at / restart_at are fractions of the run (floats), resolved for the run's length by grid();
# a label's {drop_at} and {restart_at} show the resolved epochs. Adding a grid is one entry.
GRID_TABLE: dict[str, dict[str, dict]] = {
    "lr_drop": {"constant": {"schedule": "constant"},
                "one drop @{drop_at}": {"schedule": "drop", "drop_at": [2 / 3]},
                "two drops @{drop_at}": {"schedule": "drop", "drop_at": [1 / 2, 3 / 4]},
                "reduce on plateau": {"schedule": "plateau"},
                "cosine": {"schedule": "cosine"}},
    "loss": {loss: {"loss": loss} for loss in ("mse", "smoothl1", "l1", "wing")},
    "arch": {"resnext50": {"arch": "resnext50"}, "resnet101": {"arch": "resnet101"}},
    "blocklist": {"all rows": {"blocklist": None}, "without flagged rows": {"blocklist": BLOCKLIST}},
    "warmup": {"no warmup": {"warmup": 0.0}, "5 % warmup": {"warmup": 0.05}, "20 % warmup": {"warmup": 0.2}},
    "resize": {"centre crop": {"resize_mode": "crop"}, "pad (whole face)": {"resize_mode": "pad"}},
    # AdamW with weight decay 0 is Adam: the switch only turns the decay on
    "optimizer": {"adam": {"optimizer": "adam", "weight_decay": 0.0},
                  "adamw": {"optimizer": "adamw", "weight_decay": ADAMW_DECAY},
                  "adam, adamw from 1/2": {"optimizer": "adamw", "weight_decay": ADAMW_DECAY,
                                           "weight_decay_from": 0.5}},
    "augment": {mode: {"augment": mode} for mode in ("none", "flip", "full")},
    # the report: back to the peak after the drop, then a second drop (no gain seen)
    "restarts": {"one drop @{drop_at}": {"schedule": "drop", "drop_at": [2 / 3]},
                 "drop @{drop_at[0]}, restart @{restart_at[0]}, drop @{drop_at[1]}":
                     {"schedule": "drop", "drop_at": [1 / 3, 5 / 6], "restart_at": [1 / 2]},
                 "cosine": {"schedule": "cosine"}},
    # lr is quoted for batch 32 and scaled by sqrt(batch / 32) unless lr_scaling says linear
    "batch": {"batch 64": {"batch_size": 64}, "batch 256, lr scaled by sqrt": {"batch_size": 256},
              "batch 256, lr scaled linearly": {"batch_size": 256, "lr_scaling": "linear"}},
}
GRIDS = tuple(GRID_TABLE)
_EPOCH_KEYS = ("drop_at", "restart_at")


def _at_epochs(arm: dict, epochs: int, grid_name: str) -> dict:
    """An arm's fractions of the run as epochs: in order, each after the one before, all inside the run."""
    fractions = sorted({f for k in _EPOCH_KEYS for f in arm.get(k, [])})
    at, last = {}, 0
    for f in fractions:
        last = at[f] = max(last + 1, round(f * epochs))
    if fractions and last > epochs - 1:
        raise ValueError(f"the {grid_name} grid needs at least {len(fractions) + 1} epochs (its LR changes at "
                         f"{len(fractions)} epochs inside the run), got {epochs}")
    return arm | {k: [at[f] for f in arm[k]] for k in _EPOCH_KEYS if k in arm}


def grid(name: str, epochs: int, blocklist: str | None = None) -> dict[str, dict]:
    """A grid of GRID_TABLE for a run of `epochs`: label -> overrides of the base recipe."""
    if name not in GRID_TABLE:
        raise ValueError(f"grid_name: unknown grid {name!r}; choose one of {', '.join(GRIDS)}")
    out = {}
    for label, arm in GRID_TABLE[name].items():
        if BLOCKLIST in arm.values():
            if not blocklist:
                raise ValueError(f"the {name} grid needs blocklist= (bad_annotations.csv from the EDA notebook)")
            arm = {k: blocklist if v == BLOCKLIST else v for k, v in arm.items()}
        arm = _at_epochs(arm, epochs, name)
        out[label.format(**{k: _Epochs(arm[k]) for k in _EPOCH_KEYS if k in arm})] = arm
    return out


class _Epochs(list):
    """Epochs in a label: {drop_at} is '6,9', {drop_at[0]} is '6'."""
    def __format__(self, spec: str) -> str:
        return ",".join(map(str, self))


def _config(base: dict, overrides: dict, seed: int, quick: bool = False) -> dict:
    """The config a run of the grid trains: what its train notebook makes of the same parameters."""
    return notebook_config(base | overrides | {"seed": seed}, quick)


def run_dir_for(base: dict, overrides: dict, seed: int, runs_root: Path | str, quick: bool = False) -> Path:
    return Path(runs_root) / run_folder_name(_config(base, overrides, seed, quick))


def is_finished(run_dir: Path, epochs: int) -> bool:
    h = run_dir / "history.csv"
    return h.is_file() and len(pd.read_csv(h)) >= epochs


class _ChildLines(logging.Handler):
    """papermill's log of a child notebook's outputs (log_output=True), printed here as plain lines:
    each run's progress shows in the ablation notebook itself (its widget bars cannot)."""
    SKIP = ("Executing notebook with kernel", "Executing Cell ", "Ending Cell ", "Input Notebook", "Output Notebook",
            "Working directory", "Black is not installed", "Kernel ", "Executing: ")

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage().rstrip()
        if text and not text.startswith(self.SKIP):
            print(text, file=sys.stdout, flush=True)


@contextlib.contextmanager
def _relay_child_output():
    log = logging.getLogger("papermill")
    handler, level, propagate = _ChildLines(), log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False     # not twice, when papermill's own CLI has a handler on the root logger
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        log.propagate = propagate


def run_grid(configs: dict[str, dict], base: dict, seeds: list[int], runs_root: Path | str, notebook: Path | str,
             quick: bool = False, log_dir: Path | str | None = None) -> dict[str, list[Path]]:
    """Execute `notebook` (train.ipynb) per configuration and seed; return label -> run dirs. Each
    run's own lines (epochs, its summary) are printed here as it trains; a run that fails stops the
    grid with its own error in one line, naming the run and its executed notebook."""
    import papermill as pm
    runs: dict[str, list[Path]] = {}
    accepted = set(pm.inspect_notebook(str(notebook)))
    unknown = ({k for ov in configs.values() for k in ov} | set(base)) - accepted
    if unknown:
        raise ValueError(f"{notebook} has no parameter(s) {sorted(unknown)}: the grid would not change the run")
    jobs = [(label, ov, s) for label, ov in configs.items() for s in seeds]
    runs_bar = bar(jobs, desc="ablation runs", unit="run")
    for label, overrides, seed in runs_bar:
        cfg = _config(base, overrides, seed, quick)
        run_dir = Path(runs_root) / run_folder_name(cfg)
        runs.setdefault(label, []).append(run_dir)
        runs_bar.set_postfix_str(f"{label} seed {seed}")
        if is_finished(run_dir, cfg["epochs"]):
            check_same_recipe(run_dir, cfg | {"run_dir": str(run_dir)})   # a name clash would reuse the wrong run
            continue
        params = base | overrides | {"seed": seed, "run_dir": str(run_dir), "quick": quick}
        out = Path(log_dir or runs_root) / "notebooks" / f"{run_dir.name}.ipynb"
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            with _relay_child_output():
                pm.execute_notebook(str(notebook), str(out), parameters=params, kernel_name="python3",
                                    progress_bar=False, log_output=True, cwd=str(Path(notebook).parent))
        except pm.PapermillExecutionError as e:   # the child's own error, not papermill's page of traceback
            kind = DataError if e.ename in ("DataError", "ValueError") else RuntimeError
            raise kind(f"ablation run {label!r} seed {seed} failed: {e.ename}: {e.evalue} "
                       f"(executed notebook: {out})") from None
        check_same_recipe(run_dir, cfg | {"run_dir": str(run_dir)})       # the notebook ran what the grid asked
    return runs


def histories(runs: dict[str, list[Path]]) -> dict[str, list[pd.DataFrame]]:
    return {label: [pd.read_csv(d / "history.csv") for d in dirs] for label, dirs in runs.items()}


def results_table(runs: dict[str, list[Path]], knob: str) -> pd.DataFrame:
    """One row per configuration: final and best validation MSE (original px), mean and spread over
    seeds, and the training throughput (median images/s of each run's epochs, mean over seeds)."""
    rows = []
    for label, dirs in runs.items():
        finals, bests, speeds = [], [], []
        for d in dirs:
            h = pd.read_csv(d / "history.csv")
            finals.append(h["val_mse_px"].iloc[-1])
            bests.append(h["val_mse_px"].min())
            speeds.append(h["images_per_s"].median())
        s = pd.Series(finals)
        rows.append({"knob": knob, "configuration": label, "seeds": len(dirs), "final_mse_px": s.mean(),
                     "final_std": s.std(ddof=0), "final_min": s.min(), "final_max": s.max(),
                     "best_epoch_mse_px": float(pd.Series(bests).mean()),
                     "train_images_per_s": float(pd.Series(speeds).mean()),
                     "recipe": json.loads((dirs[0] / "config.json").read_text())["name"]})
    return pd.DataFrame(rows)


def best_configuration(table: pd.DataFrame) -> str:
    return str(table.sort_values("final_mse_px").iloc[0]["configuration"])


def to_markdown(df: pd.DataFrame, floatfmt: str = "{:.2f}") -> str:
    """A plain pipe table (no tabulate dependency)."""
    cols = list(df.columns)

    def cell(v):
        return floatfmt.format(v) if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_results(table: pd.DataFrame, out_dir: Path | str, stem: str = "results") -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv, md = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    with atomic_path(csv) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(md) as tmp:
        tmp.write_text(to_markdown(table))
    return csv, md


def drop_epochs(configs: dict[str, dict], base: dict) -> dict[str, list[int]]:
    """Epochs where each configuration drops its LR (for the plot's markers), as its run resolves them."""
    out = {}
    for label, ov in configs.items():
        cfg = _config(base, ov, 0)
        out[label] = list(cfg["drop_at"]) if cfg["schedule"] == "drop" else []
    return out


def title(grid_name: str, configs: dict[str, dict], base: dict, seeds: list[int]) -> str:
    """The plot's title: the base settings every arm shares; a setting some arm overrides (the arch
    grid's arch, the batch grid's batch size) is left out, since the legend names it per arm."""
    varied = {key for overrides in configs.values() for key in overrides}
    shared = [(base["arch"], "arch"), (f"{base['crop_size']} px", "crop_size"), (f"{base['epochs']} epochs", "epochs"),
              (f"batch {base['batch_size']}", "batch_size")]
    return f"{grid_name}: " + ", ".join([text for text, key in shared if key not in varied] + [f"seeds {list(seeds)}"])


def follow_ups(grid_name: str, configs: dict[str, dict], best: str, loss: str, loss_follow_up: bool = True,
               blocklist: str | None = None) -> dict[str, dict[str, dict]]:
    """The grids to run next at the winning configuration `best`, one knob each: the loss (MSE vs
    SmoothL1, after the lr_drop grid) and, when a blocklist is given, with vs without its rows."""
    out = {}
    if grid_name == "lr_drop" and loss_follow_up:
        other = "mse" if loss != "mse" else "smoothl1"
        out["loss"] = {f"{best} + {loss}": configs[best], f"{best} + {other}": configs[best] | {"loss": other}}
    if blocklist and grid_name != "blocklist":
        out["blocklist"] = {f"{best}, all rows": configs[best],
                            f"{best}, without flagged rows": configs[best] | {"blocklist": blocklist}}
    return out
