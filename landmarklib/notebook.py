"""What the notebooks need from their surroundings: checked parameters, the data brought back on a
fresh runtime, and where outputs go so that the other notebooks (each on its own Colab VM) find them.

papermill passes `-p name value` as text where it cannot tell a type ('false' is a truthy string)
and only warns about a name the notebook lacks. check_parameters makes both errors, with the
parameter's name: every notebook calls it right after its parameters cell.

In Colab each notebook opened from a badge runs on its own VM; only Google Drive is shared and
outlives a disconnect. So every notebook brings its data back from the contest zip (zip_path, on
Drive) onto local disk, which is fast, and writes what others read (runs, bad_annotations.csv,
submission.csv, figures) under runs_root(): Drive in Colab, runs/ elsewhere.
"""
from __future__ import annotations

import ast
from pathlib import Path

from . import colab
from .config import DEFAULTS, DEMO, QUICK_DEMO, coerce, parse_bool
from .data import UNPACKED_MARKER, fingerprint, has_layout, unpack_contest
from .errors import DataError
from .synth import make_dataset

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# Names IPython itself puts into a kernel's namespace.
_IPYTHON = {"In", "Out", "get_ipython", "exit", "quit", "open"}
_LITERALS = (str, int, float, bool, list, dict, tuple, type(None))


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
    text = (NOTEBOOKS / f"{name}.py").read_text()
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
    """The notebook's parameters from `namespace` (its globals), each in its default's type; a name
    that is no parameter of notebooks/<name>.ipynb (a misspelt papermill -p) is an error. Names the
    notebook's own cells bind are not: they are what a finished run leaves in the kernel when a
    person edits a parameter and runs all cells again. Without the repository's notebooks/
    (landmarklib installed on its own) there is nothing to check against."""
    if not (NOTEBOOKS / f"{name}.py").is_file():
        print(f"{NOTEBOOKS / (name + '.py')} not found: notebook parameters not checked")
        return {}
    params, others = declared_parameters(name)
    unknown = sorted(k for k, v in namespace.items()
                     if not k.startswith("_") and k not in params and k not in others and k not in _IPYTHON
                     and isinstance(v, _LITERALS))
    if unknown:
        raise ValueError(f"notebooks/{name}.ipynb has no parameter(s) {unknown}; its parameters: {', '.join(params)}")
    return {k: namespace[k] if default is None or isinstance(default, (list, dict, tuple))
            else coerce(k, namespace[k], default) for k, default in params.items() if k in namespace}


def ensure_data(data_dir: Path | str, zip_path: Path | str | None = None, test_points: Path | str | None = None,
                demo: bool = False, demo_size: dict | None = None) -> Path:
    """The contest layout in data_dir, brought back if it is gone: unpacked from `zip_path` (again,
    after a Colab recycle), or, with demo=True, the synthetic demo set made there (only into a
    missing or empty folder). Otherwise a DataError names the folder and what is missing."""
    d = Path(data_dir)
    if has_layout(d) and (zip_path is None or (d / UNPACKED_MARKER).is_file()):
        return d
    if zip_path:
        return unpack_contest(zip_path, d, test_points)
    if demo:
        make_dataset(d, **(demo_size or {}))
        print(f"made the synthetic demo set in {d}")
        return d
    missing = [p for p in ("train/landmarks.csv", "train/images", "test/test_points.csv", "test/images")
               if not (d / p).exists()]
    raise DataError(f"{d}: {'folder not found' if not d.exists() else 'no contest layout (missing ' + ', '.join(missing) + ')'}; "
                    f"give the contest data folder, or zip_path (the contest zip, e.g. on Drive), or demo=True "
                    f"for the synthetic demo set")


def prepare_data(data_dir: str, zip_path: str | None = None, test_points_path: str | None = None,
                 demo: bool | None = None, quick: bool = False) -> Path:
    """The data a notebook works on, brought back on a fresh runtime or after a Colab recycle
    (ensure_data): every notebook calls this with the same four parameters. demo=None: the
    synthetic demo set only where nothing else can be meant, the default data_dir that does not
    exist yet outside Colab (a fresh clone), said loudly; True: the demo set; False: never."""
    for path, what in ((zip_path, "zip_path"), (test_points_path, "test_points_path")):
        if path and Path(path).is_relative_to(colab.DRIVE) and not colab.mount():
            raise DataError(f"{what} {path} is on Google Drive, which is not mounted on this runtime, and a headless "
                            f"run cannot mount it (the sign-in needs a person): mount Drive in an open notebook "
                            f"on this runtime first (from google.colab import drive; drive.mount('{colab.DRIVE}')), "
                            f"or copy the file to local disk")
    default = Path(data_dir) == Path(DEFAULTS["data_dir"])
    demo = None if demo is None else parse_bool(demo, "demo")
    if demo is None:
        demo = default and not Path(data_dir).exists() and not zip_path and not colab.on_colab()
    size = DEMO | ({k: QUICK_DEMO[k] for k in ("n_train", "n_test")} if quick else {})
    d = ensure_data(data_dir, zip_path, test_points_path, demo=demo, demo_size=size)
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


def latest_run(root: Path | str, checkpoint: str = "best.pt") -> Path:
    """The most recently written run dir under `root` that holds `checkpoint`."""
    found = sorted(Path(root).glob(f"*/{checkpoint}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"{root}: no run with {checkpoint} yet; train one (train.ipynb) or give run_dir")
    return found[-1].parent
