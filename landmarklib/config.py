"""Run configuration: the defaults, the quick profiles, validation, run names and recipe checks.

Every entry point starts from DEFAULTS and applies one dict of overrides (make_config): the CLI
flags (python -m landmarklib.train --help lists them with HELP), the notebooks' parameters cells
(papermill -p) and fit(overrides). Nothing else holds a default of a run.
"""
from __future__ import annotations

import json
from pathlib import Path

from .augment import MODES as AUGMENTS
from .data import is_synthetic
from .errors import DataError
from .geometry import MODES as RESIZE_MODES
from .losses import LOSSES
from .models import ARCHS, MIN_INPUT, check_arch
from .runtime import AMP_MODES
from .schedules import LR_BATCH, LR_SCALINGS, SCHEDULES, default_drop_at

OPTIMIZERS = ("adam", "adamw", "sgd")

# Defaults: plain literals. Units: lr per sample-mean loss, epochs over the train split, loss
# parameters in normalized coordinates (1 unit = half the input side).
DEFAULTS: dict = {
    "data_dir": "data",
    "run_dir": None,
    "cache_dir": None,
    "arch": "resnet18",
    "pretrained": "auto",
    "weights_path": None,
    "epochs": 12,
    "batch_size": 32,
    "lr": 2e-3,
    "optimizer": "adamw",
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 0.01,
    "schedule": "onecycle",
    "drop_at": None,
    "drop_factor": 0.1,
    "warmup": 0.1,                # from random init, full LR at step 0 hurts
    "restart_at": [],
    "weight_decay_from": 0.0,
    "lr_scaling": "sqrt",
    "recipe": "landmarklib",
    "t0": 4,
    "t_mult": 1,
    "plateau_patience": 1,
    "loss": "smoothl1",
    "smoothl1_beta": 0.02,
    "wing_w": 0.04,
    "wing_eps": 0.008,
    "crop_size": 128,
    "resize_mode": "crop",
    "augment": "flip",
    "val_fraction": 0.2,
    "blocklist": None,
    "seed": 0,
    "device": "auto",
    "amp": "auto",
    "channels_last": True,
    "compile": False,
    "workers": None,
    "max_train_steps": None,
}

HELP: dict[str, str] = {
    "data_dir": "contest layout folder (train/, test/)",
    "run_dir": "where config.json, history.csv, last.pt and best.pt go (default runs/<run name>); rerun to resume",
    "cache_dir": "decode cache folder (default <data_dir>/cache; keep it on local disk, not Drive)",
    "arch": "backbone: " + ", ".join(ARCHS) + ", or timm:<any timm model>",
    "pretrained": "start from ImageNet weights (else warn once, random init); auto: yes for the contest "
                  "data, no for the synthetic demo set (offline, deterministic)",
    "weights_path": "a local state dict to load into the backbone",
    "epochs": "epochs over the train split",
    "batch_size": "global batch, split across torchrun processes",
    "lr": "peak learning rate",
    "optimizer": "optimizer",
    "momentum": "sgd momentum",
    "nesterov": "sgd Nesterov momentum",
    "weight_decay": "weight decay (decoupled for adamw)",
    "schedule": "LR schedule",
    "drop_at": "epochs where the drop schedule multiplies the LR by drop_factor (default: at 2/3 of the run)",
    "drop_factor": "LR multiplier at each drop (also reduce-on-plateau's)",
    "warmup": "linear LR ramp from ~0 over this fraction of the run (any schedule but onecycle)",
    "restart_at": "epochs where the drop schedule goes back to the peak LR (then drops again at the next drop_at)",
    "weight_decay_from": "fraction of the run before which weight decay is off (0.5 with adamw: Adam, then AdamW "
                         "from half-way)",
    "lr_scaling": f"lr is quoted for a batch of {LR_BATCH}; other batch sizes scale it by the square root of the "
                  "ratio, linearly, or not at all",
    "recipe": "a named recipe under your overrides: landmarklib (these defaults) or seed (Adam 1e-3, batch 64, "
              "x0.1 at epoch 8 of 12, no warmup: the report's)",
    "t0": "warm_restarts: first period in epochs",
    "t_mult": "warm_restarts: period multiplier",
    "plateau_patience": "plateau: epochs without improvement before a drop",
    "loss": "regression loss on normalized coordinates",
    "smoothl1_beta": "smoothl1: quadratic zone half-width, normalized units (0.02 = 1.28 px at 128 px)",
    "wing_w": "wing: width of the log zone, normalized units",
    "wing_eps": "wing: curvature of the log zone, normalized units",
    "crop_size": "model input side in pixels",
    "resize_mode": "crop: organizers' centre crop; pad: whole face, black borders",
    "augment": "none, flip (with re-indexing) or full (flip, affine, colour)",
    "val_fraction": "the last rows of landmarks.csv that validate (organizers' split: 0.2)",
    "blocklist": "CSV with file_name (and flagged) to leave out of training; validation unchanged",
    "seed": "seed of init, shuffling and augmentation",
    "device": "auto, cpu, cuda, cuda:N or mps",
    "amp": "mixed precision on GPUs. auto: bf16 where the GPU has it in hardware (compute capability 8.0+, "
           "e.g. A100, H100), else fp16 with a GradScaler (T4, V100); off: fp32",
    "channels_last": "channels_last memory format on GPUs",
    "compile": "torch.compile the model (opt-in; if compilation fails the run goes on uncompiled and says so)",
    "workers": "cache build processes (default: all cores)",
    "max_train_steps": "cap on optimizer steps per epoch (smoke runs)",
}

# Named recipes: DEFAULTS | RECIPES[cfg['recipe']] | the overrides that differ from DEFAULTS.
RECIPES: dict[str, dict] = {
    "landmarklib": {},
    "seed": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "batch_size": 64, "epochs": 12,
             "schedule": "drop", "drop_factor": 0.1, "warmup": 0.0, "lr_scaling": "none"},
}
CHOICES: dict[str, tuple] = {
    "optimizer": OPTIMIZERS, "schedule": SCHEDULES, "loss": LOSSES,
    "resize_mode": RESIZE_MODES, "augment": AUGMENTS, "amp": AMP_MODES, "lr_scaling": LR_SCALINGS,
    "recipe": tuple(RECIPES),
}
LIST_KEYS = ("drop_at", "restart_at")
# Keys whose default is None but which take a number when given.
INT_OR_NONE = ("workers", "max_train_steps")
# Keys that may differ when resuming a run dir without changing what the run computes.
RESUMABLE_KEYS = {"data_dir", "run_dir", "cache_dir", "device", "workers", "epochs"}
# Keys spelled out in a run name, in this order; every other recipe key appears only when not default.
NAME_KEYS = ("arch", "loss", "batch_size", "epochs", "crop_size", "resize_mode", "schedule", "drop_at", "lr",
             "augment", "blocklist", "seed")

# quick=True in the notebooks and QUICK=1 ./run_all.sh: a tiny budget that runs every code path.
QUICK: dict = {"epochs": 4, "crop_size": 32, "batch_size": 8, "max_train_steps": 2}
# The synthetic demo set the notebooks make, full and quick.
DEMO: dict = {"n_train": 1000, "n_test": 200, "bad_fraction": 0.03, "seed": 0}
QUICK_DEMO: dict = {"n_train": 120, "n_test": 30, "crop_size": 32}
# The EDA's out-of-fold models, full and quick.
EDA: dict = {"folds": 4, "epochs": 6, "crop_size": 64}
QUICK_EDA: dict = {"folds": 2, "epochs": 1, "crop_size": 32}


def int_list(value, name: str = "value") -> list[int]:
    """8, [8, 10], "[8, 10]" or "8,10" (papermill -p passes lists as text) -> [8, 10]."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text.startswith("[") else [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"{name}: {text!r} is not a list of integers") from None
    if isinstance(value, (int, float)):
        value = [value]
    return [int(v) for v in value]


_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def parse_bool(value, name: str = "value") -> bool:
    """True/False, 1/0, or their usual spellings as text (papermill -p passes 'false', which is truthy)."""
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise ValueError(f"{name}: {value!r} is not a boolean (true/false)")


def coerce(key: str, value, default, int_or_none: bool = False):
    """`value` in the type of `default`; text (papermill -p, env vars) is parsed, a wrong type is an
    error naming `key`. None stays None where the default is None or int_or_none is set."""
    if value is None and (default is None or int_or_none):
        return None
    if isinstance(default, bool):
        return parse_bool(value, key)
    want = int if (isinstance(default, int) or int_or_none) else float if isinstance(default, float) else str
    if want is str:
        return str(value)
    try:
        out = want(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        out = None
    if out is None or (want is int and isinstance(value, float) and value != int(value)):
        raise ValueError(f"{key}: {value!r} is not {'an integer' if want is int else 'a number'}")
    return out


def make_config(overrides: dict | None = None) -> dict:
    """DEFAULTS, then the named recipe's values, then `overrides`, checked: unknown keys, types,
    choices and ranges are errors. An override equal to its default leaves the recipe's value."""
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown config key(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    given = {}
    for key, value in overrides.items():
        if key == "amp" and (isinstance(value, bool) or str(value).lower() in _TRUE | _FALSE):
            value = "auto" if parse_bool(value, key) else "off"     # amp=True/False of older configs
        if key == "pretrained":
            given[key] = "auto" if str(value).lower() == "auto" else parse_bool(value, key)
        elif key in LIST_KEYS and value is not None:
            given[key] = int_list(value, key)
        else:
            given[key] = coerce(key, value, DEFAULTS[key], key in INT_OR_NONE)
    recipe = given.get("recipe", DEFAULTS["recipe"])
    if recipe not in RECIPES:
        raise ValueError(f"recipe: unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    cfg = DEFAULTS | RECIPES[recipe] | {k: v for k, v in given.items() if v != DEFAULTS[k]}
    if cfg["drop_at"] is None:
        cfg["drop_at"] = default_drop_at(cfg["epochs"])
    check_arch(cfg["arch"])
    for key, allowed in CHOICES.items():
        if cfg[key] not in allowed:
            raise ValueError(f"{key}: unknown {key} {cfg[key]!r}; choose one of {', '.join(allowed)}")
    for key in ("epochs", "batch_size", "crop_size"):
        if cfg[key] < 1:
            raise ValueError(f"{key}: must be at least 1, got {cfg[key]}")
    for key in ("warmup", "weight_decay_from"):
        if not 0 <= cfg[key] < 1:
            raise ValueError(f"{key}: a fraction of the run in [0, 1), got {cfg[key]}")
    if not 0 < cfg["val_fraction"] < 1:
        raise ValueError(f"val_fraction: must be between 0 and 1, got {cfg['val_fraction']}")
    if cfg["lr"] <= 0:
        raise ValueError(f"lr: must be positive, got {cfg['lr']}")
    if cfg["seed"] < 0:
        raise ValueError(f"seed: must be 0 or more, got {cfg['seed']}")
    need = MIN_INPUT.get(cfg["arch"], 32)
    if cfg["crop_size"] < need:
        raise ValueError(f"crop_size: {cfg['arch']} needs crop_size >= {need}, got {cfg['crop_size']}")
    return cfg


def notebook_config(namespace: dict, quick: bool = False) -> dict:
    """The run config from a notebook's parameters (every DEFAULTS key found in `namespace`),
    with the quick profile on top when quick is set."""
    return make_config({k: v for k, v in namespace.items() if k in DEFAULTS} | (QUICK if quick else {}))


def run_name(cfg: dict) -> str:
    """A run's recipe in its name (MMPose style): arch, loss, batch, epochs, input, schedule, ...,
    then every other key that differs from its named recipe, so two recipes never share a run dir."""
    sched = cfg["schedule"] + ("@" + "-".join(map(str, cfg["drop_at"])) if cfg["schedule"] == "drop" else "")
    baseline = DEFAULTS | RECIPES[cfg["recipe"]] | {"recipe": DEFAULTS["recipe"]}   # a recipe's own values go unsaid
    extras = [f"{k}-{cfg[k]}" for k in sorted(cfg)
              if k in DEFAULTS and k not in NAME_KEYS and k not in RESUMABLE_KEYS and cfg[k] != baseline[k]]
    return (f"{cfg['arch']}_{cfg['loss']}_b{cfg['batch_size']}_e{cfg['epochs']}_{cfg['crop_size']}px-"
            f"{cfg['resize_mode']}_{sched}_lr{cfg['lr']:g}_aug-{cfg['augment']}"
            + (f"_bl-{Path(cfg['blocklist']).stem}" if cfg["blocklist"] else "")
            + "".join(f"_{e}" for e in extras) + f"_s{cfg['seed']}")


def read_run_config(run_dir: Path | str) -> dict:
    """A run dir's config.json; unreadable is a DataError naming it."""
    path = Path(run_dir) / "config.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: not found; {run_dir} holds no run") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable ({e}); it is this run dir's recipe: restore it or use a new run dir") from None
    if not isinstance(saved, dict):
        raise DataError(f"{path}: not a run config (a JSON object expected)")
    return saved


def check_same_recipe(run_dir: Path, cfg: dict) -> None:
    """Refuse to resume (or reuse) a run dir that holds another recipe."""
    saved = read_run_config(run_dir)
    if "lr_scaling" not in saved:    # written before lr_scaling: its lr was the LR at any batch size
        saved["lr_scaling"] = "none"
    if "warmup_epochs" in saved and "warmup" not in saved and saved.get("epochs"):   # warmup was in epochs
        saved["warmup"] = saved["warmup_epochs"] / saved["epochs"]
    try:   # read as today's config: keys added since take their defaults, older spellings (amp: true) today's
        saved = make_config({k: v for k, v in saved.items() if k in DEFAULTS})
    except ValueError:
        pass   # a recipe today's checks reject: compared as written, so the difference is shown
    diff = {k: (saved.get(k), cfg[k]) for k in cfg if k not in RESUMABLE_KEYS and saved.get(k) != cfg[k]}
    if diff:
        lines = ", ".join(f"{k}: {a!r} there vs {b!r} now" for k, (a, b) in diff.items())
        raise ValueError(f"{run_dir} holds a run with another recipe ({lines}); use a new run dir")


def check_same_data(run_dir: Path, data_id: dict) -> None:
    """Refuse to resume a run on another data set (data_dir may move; the data may not change)."""
    saved = read_run_config(run_dir).get("data")
    if saved is not None and saved != data_id:
        raise ValueError(f"{run_dir} was trained on other data ({saved} there vs {data_id} now); "
                         f"point data_dir at the data it was trained on, or use a new run dir")


def run_folder_name(cfg: dict) -> str:
    """The run name, prefixed `demo_` when cfg's data is the synthetic demo set: a demo run never
    takes the folder a contest run of the same recipe would have."""
    return ("demo_" if is_synthetic(cfg["data_dir"]) else "") + run_name(cfg)


def resolve_run_dir(cfg: dict, root: Path | str = "runs") -> dict:
    """cfg with run_dir set: as given, else <root>/<run folder name>, so another recipe (or the demo
    set) gets another run dir."""
    return cfg if cfg["run_dir"] else cfg | {"run_dir": str(Path(root) / run_folder_name(cfg))}


def use_pretrained(cfg: dict, synthetic: bool) -> bool:
    """Whether to start from ImageNet weights: as cfg says; 'auto' means yes unless the data is the
    synthetic demo set (which, like the tests, stays offline and deterministic)."""
    return not synthetic if cfg["pretrained"] == "auto" else cfg["pretrained"]
