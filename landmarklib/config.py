"""Run configuration: the run settings (declared once, in RUN), the named recipes, the quick
profile, run names and recipe checks.

Every entry point starts from DEFAULTS and applies one dict of overrides (make_config): the CLI
flags (python -m landmarklib.train --help lists RUN), the notebooks' parameters cells (papermill
-p) and fit(overrides); what is given wins, everywhere. Adding a setting is one entry in RUN, then
`python -m landmarklib.cells` writes it into the train notebook's parameters cell. The data format
and conventions are in docs/FORMAT.md.
"""
from __future__ import annotations

import json
from pathlib import Path

from .augment import MODES as AUGMENTS
from .data import is_synthetic
from .errors import DataError
from .geometry import MODES as RESIZE_MODES
from .loader import ORDERS as BATCH_ORDERS
from .losses import LOSSES
from .models import ARCHS, MIN_INPUT, check_arch
from .runtime import AMP_MODES, DEVICE_NAMES, device_name
from .schedules import LR_BATCH, LR_SCALINGS, SCHEDULES, default_drop_at
from .settings import BOOL_WORDS, Setting, by_name, defaults, parse_bool

OPTIMIZERS = ("adam", "adamw", "sgd")
# The default peak LR, by where the backbone starts: fine-tuned weights scored best at 1e-3, half the
# from-scratch LR (docs/RESULTS.md, "Fine-tuning, rehearsed offline").
LR_SCRATCH, LR_FINETUNE = 2e-3, 1e-3
SEED_MAX = 2 ** 32 - 1   # numpy's and torch's generators take seeds below 2**32


def _pretrained(value):
    return "auto" if str(value).strip().lower() == "auto" else parse_bool(value, "pretrained")


def _amp(value):   # amp=True/False of older configs: auto / off
    if isinstance(value, bool) or str(value).strip().lower() in BOOL_WORDS:
        return "auto" if parse_bool(value, "amp") else "off"
    return str(value)


# Named recipes: DEFAULTS | RECIPES[cfg['recipe']] | the settings given.
RECIPES: dict[str, dict] = {
    "landmarklib": {},
    "seed": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "batch_size": 64, "epochs": 12,
             "schedule": "drop", "drop_factor": 0.1, "warmup": 0.0, "lr_scaling": "none"},
    # The ablation grids' base: short enough that a grid of arms x seeds runs in minutes on the demo set.
    "ablation": {"epochs": 6, "crop_size": 64},
    # The EDA's out-of-fold models: the whole face in view (pad); L1, so the few bad labels in each fold
    # pull the model little; one drop before the last epoch. No precise BN: they validate nothing, and
    # it cost the detector recall (docs/RESULTS.md, "Validation that measures the weights").
    "eda": {"epochs": 6, "crop_size": 64, "resize_mode": "pad", "schedule": "drop", "drop_at": [5], "loss": "l1",
            "augment": "full", "precise_bn": 0},
}

# The run settings, each declared once. Units: lr per sample-mean loss at a batch of LR_BATCH,
# epochs over the train split, loss parameters in normalized coordinates (1 unit = half the input
# side). resumable: a resume may change it; spelled: the run name spells it (in run_name's format).
RUN: tuple[Setting, ...] = (
    Setting("data_dir", "data", "contest layout folder (train/, test/)", kind="path", resumable=True),
    Setting("run_dir", None, "the run's folder: config.json, history.csv, last.pt, best.pt (default "
            "runs/<run name>); rerun to resume", kind="path", resumable=True),
    Setting("cache_dir", None, "decode cache root (default <data_dir>/cache; keep it on local disk, not Drive)",
            kind="path", resumable=True),
    Setting("arch", "resnet18", "backbone: " + ", ".join(ARCHS) + ", or timm:<any timm model>", spelled=True),
    Setting("pretrained", "auto", "start from ImageNet weights (else warn once, random init); auto: yes for the "
            "contest data, no for the synthetic demo set (offline, deterministic)", kind="str",
            choices=("auto", True, False), parse=_pretrained, bare=True),
    Setting("weights_path", None, "a local state dict to load into the backbone", kind="path"),
    Setting("epochs", 12, "epochs over the train split", bounds="[1, 100000]", resumable=True, spelled=True),
    Setting("batch_size", 32, "global batch, split across torchrun processes", bounds="[1, 65536]", spelled=True),
    Setting("lr", None, f"peak learning rate (default: {LR_SCRATCH:g} from random init, {LR_FINETUNE:g} when the "
            "backbone starts from weights: ImageNet's through pretrained, or weights_path)", kind="float",
            bounds="(0, 10]", spelled=True),
    Setting("optimizer", "adamw", "optimizer", choices=OPTIMIZERS),
    Setting("backbone_lr", 1.0, "the backbone's LR as a fraction of lr (the head's); below 1 moves pretrained "
            "weights less than the new head", bounds="(0, 1]"),

    Setting("momentum", 0.9, "sgd momentum", bounds="[0, 1)"),
    Setting("nesterov", True, "sgd Nesterov momentum (needs momentum > 0)"),
    Setting("weight_decay", 0.01, "weight decay (decoupled for adamw)", bounds="[0, 1]"),
    Setting("schedule", "onecycle", "LR schedule", choices=SCHEDULES, spelled=True),
    Setting("drop_at", None, "epochs where the drop schedule multiplies the LR by drop_factor (default: at 2/3 "
            "of the run)", kind="ints", bounds="[1, 100000]", spelled=True),
    Setting("drop_factor", 0.1, "LR multiplier at each drop (also reduce-on-plateau's)", bounds="(0, 1]"),
    Setting("warmup", 0.1, "linear LR ramp from ~0 over this fraction of the run (any schedule but onecycle)",
            bounds="[0, 1)"),
    Setting("restart_at", [], "epochs where the drop schedule goes back to the peak LR (then drops again at the "
            "next drop_at)", kind="ints", bounds="[1, 100000]"),
    Setting("weight_decay_from", 0.0, "fraction of the run before which weight decay is off (0.5 with adamw: "
            "Adam, then AdamW from half-way)", bounds="[0, 1)"),
    Setting("lr_scaling", "sqrt", f"lr is quoted for a batch of {LR_BATCH}; other batch sizes scale it by the "
            "square root of the ratio, linearly, or not at all", choices=LR_SCALINGS),
    Setting("recipe", "landmarklib", "a named recipe under your overrides: landmarklib (these defaults), seed "
            "(Adam 1e-3, batch 64, x0.1 at epoch 8 of 12, no warmup: the report's), ablation (the grids' base: "
            "6 epochs at 64 px) or eda (the EDA's out-of-fold models)", choices=tuple(RECIPES)),
    Setting("t0", 4, "warm_restarts: first period in epochs", bounds="[1, 100000]"),
    Setting("t_mult", 1, "warm_restarts: period multiplier", bounds="[1, 100]"),
    Setting("plateau_patience", 1, "plateau: epochs without improvement before a drop", bounds="[0, 100000]"),
    Setting("loss", "smoothl1", "regression loss on normalized coordinates", choices=tuple(LOSSES), spelled=True),
    Setting("smoothl1_beta", 0.02, "smoothl1: quadratic zone half-width, normalized units (0.02 = 1.28 px at "
            "128 px)", bounds="(0, 1]"),
    Setting("wing_w", 0.04, "wing: width of the log zone, normalized units", bounds="(0, 1]"),
    Setting("wing_eps", 0.008, "wing: curvature of the log zone, normalized units", bounds="(0, 1]"),
    Setting("crop_size", 128, "model input side in pixels", bounds="[16, 2048]", spelled=True),
    Setting("resize_mode", "crop", "crop: organizers' centre crop; pad: whole face, black borders",
            choices=RESIZE_MODES, spelled=True),
    Setting("augment", "flip", "none, flip (with re-indexing) or full (flip, affine, colour)", choices=AUGMENTS,
            spelled=True),
    Setting("ema", 0.0, "time constant of an exponential moving average of the weights, as a fraction of the "
            "run (0: off); the averaged weights are what is validated and saved", bounds="[0, 1]"),
    Setting("precise_bn", 2048, "training images (at most the training split) whose forward pass recomputes "
            "BatchNorm's running statistics before each validation and save (0: off, the statistics training "
            "left)", bounds="[0, 1000000]"),
    Setting("val_fraction", 0.2, "the last rows of landmarks.csv that validate (organizers' split: 0.2)",
            bounds="(0, 1)"),
    Setting("blocklist", None, "CSV with file_name (and flagged) to leave out of training; validation unchanged",
            kind="path", spelled=True),
    Setting("seed", 0, "seed of init, shuffling and augmentation", bounds=f"[0, {SEED_MAX}]", spelled=True),
    Setting("device", "auto", DEVICE_NAMES, resumable=True, parse=device_name),
    Setting("amp", "auto", "mixed precision on GPUs. auto: bf16 where the GPU has it in hardware (compute "
            "capability 8.0+, e.g. A100, H100), else fp16 with a GradScaler (T4, V100); off: fp32",
            choices=AMP_MODES, parse=_amp),
    Setting("channels_last", True, "channels_last memory format on GPUs"),
    Setting("compile", False, "torch.compile the model (opt-in; if compilation fails the run goes on "
            "uncompiled and says so)"),
    Setting("workers", None, "cache build processes (default: all cores)", kind="int", bounds="[1, 1024]",
            resumable=True),
    Setting("batch_order", "random", "how a shuffled epoch reads the cache. random: a permutation, its rows "
            "read a few batches ahead; blocks: windows of 16 random runs of consecutive rows, shuffled within "
            "(long reads, for a slow disk; the same neighbours share batches every epoch, which cost accuracy "
            "on the demo set). A resume may change it", choices=BATCH_ORDERS, resumable=True),
    Setting("max_train_steps", None, "cap on optimizer steps per epoch (smoke runs)", kind="int",
            bounds="[1, 10000000]"),
)
SETTINGS: dict[str, Setting] = by_name(RUN)
RECIPE_KEYS = tuple(k for k in (s.name for s in RUN) if any(k in r for r in RECIPES.values()))   # what a recipe sets
DEFAULTS: dict = defaults(RUN)
PLACES = ("data_dir", "run_dir", "cache_dir")   # where a run reads and writes: not part of its recipe
RESUMABLE_KEYS = {s.name for s in RUN if s.resumable}


# quick=True in the notebooks and QUICK=1 ./run_all.sh: a tiny budget that runs every code path.
# Applied in one place, quick_profile(), to whatever holds these keys: a run's settings, the demo
# set's size, the EDA's folds, an ablation's seeds (the first only).
QUICK: dict = {"epochs": 4, "crop_size": 32, "batch_size": 8, "max_train_steps": 2, "precise_bn": 16, "n_train": 120,
               "n_test": 30, "folds": 2, "seeds": 1}
# The synthetic demo set the notebooks make.
DEMO: dict = {"n_train": 1000, "n_test": 200, "bad_fraction": 0.03, "seed": 0}


def quick_profile(params: dict) -> dict:
    """`params` under the quick profile: each QUICK key they hold takes QUICK's value (seeds: the
    first QUICK['seeds'] of them)."""
    return params | {k: params[k][:v] if k == "seeds" else v for k, v in QUICK.items() if k in params}


def make_config(overrides: dict | None = None) -> dict:
    """DEFAULTS, then the named recipe's values, then `overrides` (what was given: the CLI passes only
    the flags given, a notebook only the parameters that differ from their defaults), every value
    checked against its declaration (type, choices, range, finite) and then against the others (an
    arch's least input, Nesterov's momentum). Raises a ValueError naming the setting and what it
    allows; nothing is written before this."""
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown config key(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    given = {key: SETTINGS[key].check(value) for key, value in overrides.items()}
    recipe = given.get("recipe", DEFAULTS["recipe"])
    cfg = DEFAULTS | RECIPES[recipe] | given
    if cfg["lr"] is None:
        cfg["lr"] = LR_FINETUNE if starts_from_weights(cfg) else LR_SCRATCH
    if cfg["drop_at"] is None:
        cfg["drop_at"] = default_drop_at(cfg["epochs"])
    check_arch(cfg["arch"])
    need = MIN_INPUT.get(cfg["arch"], 32)
    if cfg["crop_size"] < need:
        raise ValueError(f"crop_size: {cfg['arch']} needs crop_size >= {need}, got {cfg['crop_size']}")
    if cfg["optimizer"] == "sgd" and cfg["nesterov"] and cfg["momentum"] == 0:
        raise ValueError("momentum: sgd with nesterov needs momentum > 0, got 0 (or give --no-nesterov)")
    return cfg


def notebook_config(namespace: dict, quick: bool = False) -> dict:
    """The run config from a notebook's parameters, by the CLI's rule: every run setting in
    `namespace` that is not None is given, and a given value wins over the named recipe's (None is
    "not given": the recipe's value, or the value worked out from the others). With quick, the
    quick profile's values on top."""
    given = {k: v for k, v in namespace.items() if k in DEFAULTS and v is not None}
    if quick:
        given |= {k: v for k, v in QUICK.items() if k in DEFAULTS}
    return make_config(given)


def describe(cfg: dict) -> str:
    """The settings a run resolved to, in one line: its recipe, then every setting the recipe names
    or that differs from the defaults (where the data and outputs are is said elsewhere)."""
    same = ("data_dir", "weights_path", "pretrained") + (() if cfg["schedule"] == "drop" else ("drop_at",))
    base = make_config({k: cfg[k] for k in same})   # the defaults on this data: its lr; drop epochs if it drops
    shown = [k for k in DEFAULTS if k not in PLACES and k != "recipe"
             and (k in RECIPES[cfg["recipe"]] or cfg[k] != base[k])]
    if not shown:
        return f"settings: the defaults (recipe {cfg['recipe']})"
    return f"settings: recipe {cfg['recipe']}" + "".join(f", {k} {cfg[k]}" for k in shown)


def run_name(cfg: dict) -> str:
    """A run's recipe in its name (MMPose style): arch, loss, batch, epochs, input, schedule, ...,
    then every other key that differs from its named recipe, so two recipes never share a run dir."""
    sched = cfg["schedule"] + ("@" + "-".join(map(str, cfg["drop_at"])) if cfg["schedule"] == "drop" else "")
    baseline = DEFAULTS | RECIPES[cfg["recipe"]] | {"recipe": DEFAULTS["recipe"]}   # a recipe's own values go unsaid
    extras = [f"{k}-{_spell(k, cfg[k])}" for k in sorted(cfg) if k in SETTINGS and not SETTINGS[k].spelled
              and not SETTINGS[k].resumable and cfg[k] != baseline[k]]
    return (f"{cfg['arch']}_{cfg['loss']}_b{cfg['batch_size']}_e{cfg['epochs']}_{cfg['crop_size']}px-"
            f"{cfg['resize_mode']}_{sched}_lr{cfg['lr']:g}_aug-{cfg['augment']}"
            + (f"_bl-{Path(cfg['blocklist']).stem}" if cfg["blocklist"] else "")
            + "".join(f"_{e}" for e in extras) + f"_s{cfg['seed']}")


def _spell(key: str, value) -> str:
    """A value as a run name spells it: a path by its file's stem (a path never makes a run name
    climb out of its root)."""
    return Path(value).stem if SETTINGS[key].kind == "path" else str(value)


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


def as_current(saved: dict) -> dict:
    """A config written by any version (config.json, a checkpoint's), read as today's: keys added
    since take their defaults, older spellings (amp: true, warmup_epochs) today's. One that today's
    checks reject is returned as written, so a comparison shows the difference."""
    saved = dict(saved)
    if "lr_scaling" not in saved:    # written before lr_scaling: its lr was the LR at any batch size
        saved["lr_scaling"] = "none"
    for key, before in (("ema", 0), ("precise_bn", 0), ("backbone_lr", 1.0)):   # written before these existed
        saved.setdefault(key, before)
    if "warmup_epochs" in saved and "warmup" not in saved and saved.get("epochs"):   # warmup was in epochs
        saved["warmup"] = saved["warmup_epochs"] / saved["epochs"]
    try:
        return make_config({k: v for k, v in saved.items() if k in DEFAULTS})
    except ValueError:
        return saved


def recipe_difference(a: dict, b: dict, a_is: str = "there", b_is: str = "now") -> str:
    """The settings two configs (read as_current) differ in, save those a resume may change, as
    'key: <a> there vs <b> now, ...'; '' when they hold the same recipe."""
    a, b = as_current(a), as_current(b)
    return ", ".join(f"{k}: {a.get(k)!r} {a_is} vs {b.get(k)!r} {b_is}" for k in DEFAULTS
                     if k not in RESUMABLE_KEYS and a.get(k) != b.get(k))


def check_same_recipe(run_dir: Path, cfg: dict) -> None:
    """Refuse to resume (or reuse) a run dir that holds another recipe."""
    diff = recipe_difference(read_run_config(run_dir), cfg)
    if diff:
        raise ValueError(f"{run_dir} holds a run with another recipe ({diff}); use a new run dir")


def check_same_data(run_dir: Path, data_id: dict) -> None:
    """Refuse to resume a run on another data set (data_dir may move; the data may not change)."""
    saved = read_run_config(run_dir).get("data")
    # Keys both records hold: a run recorded before the content hash (its landmarks_csv key was a
    # hash of the file's ends) is still compared on the image count and the demo-set flag.
    if saved is not None and any(saved[k] != data_id[k] for k in saved.keys() & data_id.keys()):
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


def starts_from_weights(cfg: dict) -> bool:
    """Whether the run's backbone starts from trained weights (a weights file, or ImageNet's as
    pretrained asks for them on this data_dir), which sets the default lr. Where ImageNet's weights
    cannot be had, the model starts from random init with a warning, at the fine-tuning lr."""
    return bool(cfg["weights_path"]) or use_pretrained(cfg, is_synthetic(cfg["data_dir"]))


def use_pretrained(cfg: dict, synthetic: bool) -> bool:
    """Whether to start from ImageNet weights: as cfg says; 'auto' means yes unless the data is the
    synthetic demo set (which, like the tests, stays offline and deterministic)."""
    return not synthetic if cfg["pretrained"] == "auto" else cfg["pretrained"]
