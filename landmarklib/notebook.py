"""What the notebooks need from their surroundings: checked parameters, the data brought back on a
fresh runtime, and where outputs go so that the other notebooks (each on its own Colab VM) find them.

Each notebook's parameters are declared once, in PARAMETERS (the run settings it shares with a
run reuse config.RUN's declarations). papermill passes `-p name value` as text where it cannot
tell a type ('false' is a truthy string) and only warns about a name the notebook lacks.
check_parameters checks every parameter against its declaration (None defaults included) and
makes an unknown name an error: every notebook calls it right after its parameters cell, which
`python -m landmarklib.cells` writes from the declaration.

In Colab each notebook opened from a badge runs on its own VM; only Google Drive is shared and
outlives a disconnect. So every notebook brings its data back from the contest zip (zip_path, or
the one in MyDrive/landmarklib/) onto local disk, which is fast, and writes what others read (runs,
bad_annotations.csv, submission.csv, figures) under runs_root(): Drive in Colab, runs/ elsewhere.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd

from . import colab
from .ablation import GRIDS
from .config import DEFAULTS, DEMO, RECIPE_KEYS, RECIPES, RUN, SEED_MAX, SETTINGS, quick_profile
from .data import file_digest, fingerprint, has_layout, is_synthetic
from .errors import DataError
from .predict import TTA
from .runs import best_runs
from .settings import Setting, by_name, parse_bool
from .synth import make_dataset
from .unpack import UNPACKED_MARKER, put_test_points, unpack_contest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
# Names IPython itself puts into a kernel's namespace.
_IPYTHON = {"In", "Out", "get_ipython", "exit", "quit", "open"}
_LITERALS = (str, int, float, bool, list, dict, tuple, type(None))

# Where the data comes from and where outputs go: the same in every notebook.
SOURCE = (
    Setting("zip_path", None, "the contest zip (e.g. on Drive): unpacked into data_dir on a fresh runtime",
            kind="path"),
    Setting("test_points_path", None, "the 2020 test_points.csv that came beside the zip", kind="path"),
    Setting("demo", None, "True: the synthetic demo set; None: only for the default data_dir on a fresh clone",
            kind="bool"),
    Setting("mount_drive", True, "in Colab: outputs on Drive"),
    Setting("quick", False, "a tiny budget that runs every code path, over any budget given (config.QUICK; what "
                            "the tests run)"),
)
_ABLATION, _EDA = RECIPES["ablation"], RECIPES["eda"]
# Each notebook's parameters, declared once. `out_dir`: a folder of a notebook's outputs; `out`: the
# one file it writes; `run_dir`: one training run; `grid_dir`: an ablation's runs; `run_dirs`: the
# runs a submission takes checkpoints from.
PARAMETERS: dict[str, tuple[Setting, ...]] = {
    "data": (
        SETTINGS["data_dir"],
        Setting("out_dir", None, "where the figures go; None: <runs folder>/data (on Drive in Colab)", kind="path"),
        SETTINGS["cache_dir"], SETTINGS["crop_size"], SETTINGS["resize_mode"], *SOURCE),
    "eda_bad_annotations": (
        SETTINGS["data_dir"],
        Setting("out_dir", None, "bad_annotations.csv, figures, folds; None: <runs folder>/eda (Drive in Colab)",
                kind="path"),
        Setting("out", None, "the scores CSV; None: <out_dir>/bad_annotations.csv", kind="path"),
        Setting("use_model", True, "False: the fast shape-only stage"),
        Setting("k", None, "flag when a robust z-score exceeds k at any stage (None: each stage's threshold set "
                "from its own score distribution)", kind="float", bounds="(0, 1000]"),
        Setting("folds", 4, "the out-of-fold models", bounds="[2, 100]"),
        SETTINGS["epochs"].with_default(_EDA["epochs"]), SETTINGS["crop_size"].with_default(_EDA["crop_size"]),
        SETTINGS["device"], *SOURCE),
    # A setting some named recipe sets is None here, "the recipe's value": a value given wins, whatever it is.
    "train": tuple(s.with_default(None) if s.name in RECIPE_KEYS else s for s in RUN) + SOURCE,
    "lr_drop_ablation": (
        SETTINGS["data_dir"],
        Setting("grid_dir", None, "every run of the grid goes under here; None: <runs folder>/ablation", kind="path"),
        Setting("grid_name", "lr_drop", "the knob to vary", choices=GRIDS),
        Setting("seeds", [0, 1], "one run per arm and seed", kind="ints", bounds=f"[0, {SEED_MAX}]"),
        SETTINGS["arch"], SETTINGS["epochs"].with_default(_ABLATION["epochs"]), SETTINGS["batch_size"],
        SETTINGS["lr"], SETTINGS["loss"], SETTINGS["crop_size"].with_default(_ABLATION["crop_size"]),
        SETTINGS["augment"], SETTINGS["blocklist"], SETTINGS["device"], *SOURCE,
        Setting("loss_follow_up", True, "lr_drop grid: then MSE vs SmoothL1 at the best schedule")),
    "submission": (
        SETTINGS["data_dir"],
        Setting("run_dirs", None, "one run dir, or a list of them for an ensemble; \"best:K\": the K best finished "
                "runs of the runs folder on the same data and split; None: the latest run",
                kind="paths"),
        Setting("checkpoint", "best.pt", "the file each run dir gives", choices=("best.pt", "last.pt")),
        Setting("tta", "flip", "test-time augmentation", choices=TTA),
        Setting("out", None, "the submission CSV; None: <runs folder>/submission.csv (on Drive in Colab)",
                kind="path"),
        SETTINGS["device"], *SOURCE),
}
# The notebooks, in the order they run: the one list that run_all.sh (python -m landmarklib.cells --list),
# the tests and the README's badges follow. A new notebook: its PARAMETERS entry, then python -m landmarklib.cells.
NOTEBOOKS = tuple(PARAMETERS)


def _bound_names(source: str) -> set[str]:
    """Every name a cell binds at any depth: assignments, loop and with targets, imports, defs."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def declared_parameters(name: str) -> tuple[dict, set[str]]:
    """(parameter -> default, names the other cells bind) of notebooks/<name>.py."""
    text = (NOTEBOOK_DIR / f"{name}.py").read_text()
    chunks = text.split("\n# %%")   # each starts with the rest of its marker line (tags, [markdown])
    index = next(i for i, c in enumerate(chunks) if c.startswith(' tags=["parameters"]'))
    cells = [c.split("\n", 1)[1] if i else c for i, c in enumerate(chunks)]
    params = {}
    for node in ast.parse(cells[index]).body:
        for target in node.targets if isinstance(node, ast.Assign) else []:
            if isinstance(target, ast.Name):
                try:
                    params[target.id] = ast.literal_eval(node.value)
                except ValueError:
                    params[target.id] = None
    others = set().union(*(_bound_names(c) for i, c in enumerate(cells)
                           if i != index and not chunks[i].startswith(" [markdown]")))
    return params, others - set(params)


def check_parameters(name: str, namespace: dict) -> dict:
    """The notebook's parameters from `namespace` (its globals), each checked against its declaration
    in PARAMETERS (type, choices, range; None where the default is None), under the quick profile
    when `quick` is set. A name that is no parameter of notebooks/<name>.ipynb (a misspelt
    papermill -p) is an error. Names the notebook's own cells bind are not: they are what a finished
    run leaves in the kernel when a person edits a parameter and runs all cells again."""
    declared = by_name(PARAMETERS[name])
    if (NOTEBOOK_DIR / f"{name}.py").is_file():   # landmarklib installed without the repository: no cells to read
        others = declared_parameters(name)[1]
        unknown = sorted(k for k, v in namespace.items()
                         if not k.startswith("_") and k not in declared and k not in others and k not in _IPYTHON
                         and isinstance(v, _LITERALS))
        if unknown:
            raise ValueError(f"notebooks/{name}.ipynb has no parameter(s) {unknown}; its parameters: "
                             f"{', '.join(declared)}")
    params = {k: s.check(namespace[k]) for k, s in declared.items() if k in namespace}
    return quick_profile(params) if params.get("quick") else params


def ensure_data(data_dir: Path | str, zip_path: Path | str | None = None, test_points: Path | str | None = None,
                demo: bool = False, demo_size: dict | None = None) -> Path:
    """The contest layout in data_dir, brought back if it is gone: unpacked from `zip_path` (again,
    after a Colab recycle), or, with demo=True, the synthetic demo set made there (only into a
    missing or empty folder). Otherwise a DataError names the folder and what is missing. A given
    `test_points` always wins over the one in data_dir, and that is said."""
    d = Path(data_dir)
    if zip_path:   # at once when data_dir came from this zip and these test points (unpack_contest's marker)
        return unpack_contest(zip_path, d, test_points)
    if has_layout(d):
        dest = d / "test" / "test_points.csv"
        if test_points and file_digest(test_points) != file_digest(dest):
            put_test_points(Path(test_points), dest, f"using {test_points} (test_points_path), not the file that was there")
        return d
    if demo:
        make_dataset(d, **(demo_size or {}))
        print(f"made the synthetic demo set in {d}")
        return d
    missing = [p for p in ("train/landmarks.csv", "train/images", "test/test_points.csv", "test/images")
               if not (d / p).exists()]
    raise DataError(f"{d}: {'folder not found' if not d.exists() else 'no contest layout (missing ' + ', '.join(missing) + ')'}; "
                    f"give the contest data folder, or zip_path (the contest zip, e.g. on Drive), or demo=True "
                    f"for the synthetic demo set")


def drive_zip(folder: Path | None = None) -> Path:
    """The contest zip in MyDrive/landmarklib/ (colab.DRIVE_HOME), where a Colab user puts it: the one
    .zip there, said in one line; none, or several, is a DataError saying what to do."""
    folder = folder or colab.DRIVE_HOME
    zips = sorted(p for p in folder.glob("*.zip") if p.is_file()) if folder.is_dir() else []
    if len(zips) == 1:
        print(f"zip_path: {zips[0]} (the one .zip in {folder})")
        return zips[0]
    if zips:
        raise DataError(f"{folder} holds {len(zips)} zips ({', '.join(z.name for z in zips)}); "
                        f"give zip_path, the one to use")
    raise DataError(f"no contest zip in {folder}: put it there (with test_points.csv beside it if yours came "
                    f"separately), or give zip_path, or demo=True for the synthetic demo set")


def prepare_data(data_dir: str, zip_path: str | None = None, test_points_path: str | None = None,
                 demo: bool | None = None, quick: bool = False) -> Path:
    """The data a notebook works on, brought back on a fresh runtime or after a Colab recycle
    (ensure_data): every notebook calls this with the same four parameters. With no zip_path and no
    contest data in data_dir, where Google Drive is mounted (or can be: Colab with a person at it),
    the zip is the one in MyDrive/landmarklib/ (drive_zip). demo=None: the synthetic demo set only
    where nothing else can be meant, the default data_dir that does not exist yet outside Colab (a
    fresh clone), said loudly; True: the demo set; False: never."""
    for path, what in ((zip_path, "zip_path"), (test_points_path, "test_points_path")):
        if path and Path(path).is_relative_to(colab.DRIVE) and not colab.mount():
            raise DataError(f"{what} {path} is on Google Drive, which is not mounted on this runtime, and a headless "
                            f"run cannot mount it (the sign-in needs a person): mount Drive in an open notebook "
                            f"on this runtime first (from google.colab import drive; drive.mount('{colab.DRIVE}')), "
                            f"or copy the file to local disk")
    d = Path(data_dir)
    demo = None if demo is None else parse_bool(demo, "demo")
    ready = has_layout(d) and (not is_synthetic(d) or (d / UNPACKED_MARKER).is_file())   # nothing to look for
    if not zip_path and demo is not True and not ready and colab.mount():
        zip_path = drive_zip()
    if demo is None:
        demo = d == Path(DEFAULTS["data_dir"]) and not d.exists() and not zip_path and not colab.on_colab()
    size = quick_profile(DEMO) if quick else DEMO
    d = ensure_data(d, zip_path, test_points_path, demo=demo, demo_size=size)
    if fingerprint(d)["synthetic"]:
        print(f"DEMO DATA: {d} holds the synthetic demo set, not the contest data "
              f"(give data_dir or zip_path for the contest data)")
    return d


def runs_root(mount_drive: bool = True) -> Path:
    """Where what outlives the runtime goes (runs, bad_annotations.csv, submission.csv, figures):
    Drive (MyDrive/landmarklib/runs) when it is mounted or can be (an interactive Colab session;
    a headless run on a VM where an open notebook mounted it), else runs/. A headless run in Colab
    with no Drive says that its outputs go to local disk, which a disconnect wipes."""
    if mount_drive and colab.mount():
        colab.DRIVE_RUNS.mkdir(parents=True, exist_ok=True)
        return colab.DRIVE_RUNS
    if colab.on_colab():
        print("Google Drive is not mounted (a headless run cannot mount it), so outputs go to runs/ on local disk, "
              "which a disconnect wipes; mount Drive in an open notebook on this runtime first, or pass run_dir")
    return Path("runs")


def output_path(given: str | None, default_name: str, mount_drive: bool = True) -> Path:
    """`given`, or <runs_root>/<default_name>: where a notebook writes what other notebooks read."""
    return Path(given) if given else runs_root(mount_drive) / default_name


def choose_runs(run_dirs: str | list[str] | None, root: Path | str, checkpoint: str = "best.pt",
                runs_table: pd.DataFrame | None = None) -> list[Path]:
    """The submission notebook's run_dirs as run folders: None, the latest run under `root`; "best:K",
    the K best finished runs there (runs.best_runs, from `runs_table` when given); else the folder or
    folders given."""
    if run_dirs is None:
        return [latest_run(root, checkpoint)]
    if isinstance(run_dirs, str) and run_dirs.startswith("best:"):
        k = run_dirs[len("best:"):]
        if not k.isdigit() or int(k) < 1:
            raise DataError(f"run_dirs {run_dirs!r}: best:K takes a whole number K of 1 or more, e.g. best:3")
        return best_runs(root, int(k), runs_table)
    return [Path(r) for r in ([run_dirs] if isinstance(run_dirs, str) else run_dirs)]


def latest_run(root: Path | str, checkpoint: str = "best.pt") -> Path:
    """The most recently written run dir under `root` that holds `checkpoint`."""
    found = sorted(Path(root).glob(f"*/{checkpoint}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"{root}: no run with {checkpoint} yet; train one (train.ipynb) or give run_dir")
    return found[-1].parent
