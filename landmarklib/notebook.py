"""What the notebooks need from their surroundings: checked parameters, and where runs live.

papermill passes `-p name value` as text where it cannot tell a type ('false' is a truthy string)
and only warns about a name the notebook lacks. check_parameters makes both errors, with the
parameter's name: every notebook calls it right after its parameters cell.

In an interactive Colab session the runs go to Google Drive (a disconnect wipes /content); data
and caches stay on local disk, which is fast.
"""
from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

from .config import DEFAULTS, DEMO, QUICK_DEMO, coerce, parse_bool
from .data import UNPACKED_MARKER, fingerprint, has_layout, unpack_contest
from .errors import DataError
from .synth import make_dataset

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
DRIVE = Path("/content/drive")
DRIVE_RUNS = DRIVE / "MyDrive" / "landmarklib" / "runs"
# Names IPython itself puts into a kernel's namespace.
_IPYTHON = {"In", "Out", "get_ipython", "exit", "quit", "open"}
_LITERALS = (str, int, float, bool, list, dict, tuple, type(None))


def declared_parameters(name: str) -> tuple[dict, set[str]]:
    """(parameter -> default, names the cells before it define) of notebooks/<name>.py."""
    text = (NOTEBOOKS / f"{name}.py").read_text()
    cells = text.split("\n# %%")
    index = next(i for i, c in enumerate(cells) if c.startswith(' tags=["parameters"]'))

    def assigned(source: str) -> dict:
        out = {}
        for node in ast.parse(source).body:
            targets = node.targets if isinstance(node, ast.Assign) else []
            for t in targets:
                for n in (t.elts if isinstance(t, ast.Tuple) else [t]):
                    if isinstance(n, ast.Name):
                        out[n.id] = node.value
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                out |= {(a.asname or a.name).split(".")[0]: None for a in node.names}
            if isinstance(node, ast.If):      # the setup cell assigns inside its ifs
                out |= assigned(ast.unparse(ast.Module(body=node.body + node.orelse, type_ignores=[])))
        return out

    params = {}
    for key, value in assigned(cells[index].split("\n", 1)[1]).items():
        try:
            params[key] = ast.literal_eval(value)
        except ValueError:
            params[key] = None
    before = set().union(*(assigned(c.split("\n", 1)[1] if i else c) for i, c in enumerate(cells[:index])))
    return params, before


def check_parameters(name: str, namespace: dict) -> dict:
    """The notebook's parameters from `namespace` (its globals), each in its default's type; a name
    that is no parameter of notebooks/<name>.ipynb (a misspelt papermill -p) is an error. Without the
    repository's notebooks/ (landmarklib installed on its own) there is nothing to check against."""
    if not (NOTEBOOKS / f"{name}.py").is_file():
        print(f"{NOTEBOOKS / (name + '.py')} not found: notebook parameters not checked")
        return {}
    params, before = declared_parameters(name)
    unknown = sorted(k for k, v in namespace.items()
                     if not k.startswith("_") and k not in params and k not in before and k not in _IPYTHON
                     and isinstance(v, _LITERALS))
    if unknown:
        raise ValueError(f"notebooks/{name}.ipynb has no parameter(s) {unknown}; its parameters: {', '.join(params)}")
    return {k: namespace[k] if default is None or isinstance(default, (list, dict, tuple))
            else coerce(k, namespace[k], default) for k, default in params.items() if k in namespace}


def interactive_colab() -> bool:
    """A notebook open in Colab's own frontend (not a headless papermill kernel inside Colab)."""
    return "google.colab" in sys.modules


def mount() -> bool:
    """Mount Google Drive at /content/drive in an interactive Colab session (asks once); False elsewhere."""
    if not interactive_colab():
        return False
    if not (DRIVE / "MyDrive").is_dir():
        from google.colab import drive
        drive.mount(str(DRIVE))
    return True


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
    """The data a notebook works on, brought back after a Colab recycle (ensure_data). demo=None:
    the synthetic demo set only where nothing else can be meant, the default data_dir that does not
    exist yet outside Colab (a fresh clone), said loudly; True: the demo set; False: never."""
    if zip_path and str(zip_path).startswith(str(DRIVE)):
        mount()
    default = Path(data_dir) == Path(DEFAULTS["data_dir"])
    demo = None if demo is None else parse_bool(demo, "demo")
    if demo is None:
        demo = default and not Path(data_dir).exists() and not zip_path and not interactive_colab()
    size = DEMO | ({k: QUICK_DEMO[k] for k in ("n_train", "n_test")} if quick else {})
    d = ensure_data(data_dir, zip_path, test_points_path, demo=demo, demo_size=size)
    if fingerprint(d)["synthetic"]:
        print(f"DEMO DATA: {d} holds the synthetic demo set, not the contest data "
              f"(give data_dir or zip_path for the contest data)")
    return d


def runs_root(mount_drive: bool = True) -> Path:
    """Where runs go: Drive (MyDrive/landmarklib/runs) in an interactive Colab session, else runs/.
    Headless papermill inside Colab cannot mount Drive: it says so and uses runs/ (pass an explicit
    run_dir on /content/drive if Drive is already mounted there)."""
    if mount_drive and mount():
        DRIVE_RUNS.mkdir(parents=True, exist_ok=True)
        return DRIVE_RUNS
    if os.environ.get("COLAB_RELEASE_TAG") and not interactive_colab():
        print("headless in Colab: Drive cannot be mounted from here, so runs go to runs/ on local disk, "
              "which a disconnect wipes; pass run_dir=/content/drive/MyDrive/... if Drive is mounted")
    return Path("runs")


def latest_run(root: Path | str, checkpoint: str = "best.pt") -> Path:
    """The most recently written run dir under `root` that holds `checkpoint`."""
    found = sorted(Path(root).glob(f"*/{checkpoint}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"{root}: no run with {checkpoint} yet; train one (train.ipynb) or give run_dir")
    return found[-1].parent
