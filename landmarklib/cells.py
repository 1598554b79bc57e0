"""The notebooks' generated cells: the setup cell (the same in every notebook) and each parameters
cell, written from its declaration (notebook.PARAMETERS) as a Colab form.

    python -m landmarklib.cells           write them into notebooks/*.py, then each .ipynb from its .py
    python -m landmarklib.cells --check   name the notebooks whose cells differ from that (exit 1); what
                                          run_all.sh runs first, in any jupytext version, writing nothing

A form (Colab's `# @param` annotations) shows the settings people change most, under short
headings; in the train notebook every other run setting follows as a plain line, at its default,
so `papermill -p` knows it too (`python -m landmarklib.train --help` says what each does). The
setup cell makes landmarklib importable (on a fresh Colab runtime, a clone in /content) and calls
colab.setup, which does the rest where it is tested.
"""
from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from .atomic import atomic_path
from .config import DEFAULTS, LR_FINETUNE, LR_SCRATCH, RECIPE_KEYS
from .notebook import NOTEBOOK_DIR, NOTEBOOKS, PARAMETERS
from .settings import Setting, by_name

REPO_URL = "https://github.com/landmarklib/landmarklib"
SETUP = f'''# @title Setup {{ display-mode: "form" }}
# @markdown In Colab this clones landmarklib into `/content` (a later session updates the clone) and
# @markdown installs what Colab lacks, never its own torch. Elsewhere it only finds the repository root.
# @markdown A fork? Put its address here, and in README.md's badges.
REPO_URL = "{REPO_URL}"  # @param {{type:"string"}}
import importlib.util, os, subprocess, sys
# A fresh Colab runtime, with a person at it: clone. A headless kernel (papermill) never clones.
if "google.colab" in sys.modules and get_ipython().kernel._allow_stdin and not importlib.util.find_spec("landmarklib"):
    subprocess.run(["git", "clone", "-q", REPO_URL, "landmarklib"], check=True)
for root in ("landmarklib", ".."):   # the clone, seen from Colab's /content; the repository, seen from notebooks/
    if os.path.isfile(os.path.join(root, "landmarklib", "__init__.py")):
        sys.path.insert(0, os.path.abspath(root))
from landmarklib.colab import setup
setup()   # Colab: update the clone, install what it lacks; everywhere: work from the repository root
'''

_DATA = ("Data | `zip_path` None: the one zip in MyDrive/landmarklib/. `demo = True`: the synthetic demo set.",
         ("zip_path", "test_points_path", "demo", "data_dir"))
_RECIPE_NOTE = ("`None` takes the recipe's value. The landmarklib recipe's: " + ", ".join(
    f"{k} {DEFAULTS[k]}" for k in ("epochs", "batch_size", "crop_size", "loss", "augment"))
    + f"; lr {LR_SCRATCH:g} from random init, {LR_FINETUNE:g} from pretrained weights.")
# The arch dropdown's entries; any name of models.ARCHS, or timm:<name>, can be typed instead.
ARCH_CHOICES = ("resnet18", "resnet34", "resnet50", "resnext50", "resnet101", "efficientnet_b0", "efficientnet_b3",
                "convnext_tiny", "timm:resnet34d")
# Each notebook's form: (heading, parameters), the settings people change most first. A heading's
# text after " | " is a line under it.
FORMS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "data": (_DATA, ("Decode cache", ("crop_size", "resize_mode", "cache_dir")),
             ("Outputs: figures on Drive in Colab", ("out_dir", "mount_drive", "quick"))),
    "eda_bad_annotations": (
        ("Detector | `k` None: each stage's threshold from its own scores", ("use_model", "k", "folds", "epochs",
                                                                          "crop_size", "device")),
        _DATA, ("Outputs: bad_annotations.csv and figures on Drive in Colab", ("out_dir", "out", "mount_drive", "quick"))),
    "train": (
        ("What to train | " + _RECIPE_NOTE, ("arch", "pretrained", "recipe", "epochs", "batch_size", "lr", "crop_size",
                                              "loss", "augment", "blocklist", "seed")),
        _DATA, ("Outputs: the run dir, on Drive in Colab", ("run_dir", "mount_drive", "quick"))),
    "lr_drop_ablation": (
        ("The grid", ("grid_name", "seeds", "loss_follow_up", "blocklist")),
        ("The recipe every arm shares", ("arch", "epochs", "batch_size", "lr", "loss", "crop_size", "augment",
                                         "device")),
        _DATA, ("Outputs: the runs, plots and table, on Drive in Colab", ("grid_dir", "mount_drive", "quick"))),
    "submission": (
        ("Which runs | `run_dirs` None: the latest run", ("run_dirs", "checkpoint", "tta", "device")),
        _DATA, ("Outputs: submission.csv, on Drive in Colab", ("out", "mount_drive", "quick"))),
}


def _literal(value) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _form_field(s: Setting) -> str:
    """Colab's form annotation for a setting: a dropdown for choices, a checkbox, a number, text;
    raw (a Python literal) where None is a value."""
    if s.default is None or s.kind in ("ints", "paths"):
        return '{type:"raw"}'
    if s.kind == "bool":
        return '{type:"boolean"}'
    if s.choices:
        return json.dumps([str(c).lower() if isinstance(c, bool) else c for c in s.choices])
    if s.name == "arch":
        return json.dumps(list(ARCH_CHOICES)) + " {allow-input: true}"
    return {"int": '{type:"integer"}', "float": '{type:"number"}'}.get(s.kind, '{type:"string"}')


def parameters_cell(name: str) -> str:
    """notebooks/<name>.py's parameters cell, from PARAMETERS[name] and FORMS[name]."""
    declared = by_name(PARAMETERS[name])
    in_form = [k for _, keys in FORMS[name] for k in keys]
    assert len(in_form) == len(set(in_form)) and set(in_form) <= set(declared), name
    assert name == "train" or set(in_form) == set(declared), f"{name}: a parameter missing from its form"
    lines = ['# @title Parameters { display-mode: "form" }',
             "# @markdown Each one is checked before anything runs; headless, `papermill -p NAME VALUE` sets it."]
    for heading, keys in FORMS[name]:
        title, _, note = heading.partition(" | ")
        lines += [f"# @markdown ### {title}"] + [f"# @markdown {line}" for line in textwrap.wrap(note, 100)]
        lines += [f"{k} = {_literal(declared[k].default)}  # @param {_form_field(declared[k])}" for k in keys]
    rest = [k for k in declared if k not in in_form]
    if rest:
        lines += textwrap.wrap("Every other run setting, at its default (None: the recipe's value, for "
                               + ", ".join(k for k in rest if k in RECIPE_KEYS) + "). `python -m "
                               "landmarklib.train --help` says what each one does and allows.", 100,
                               initial_indent="# ", subsequent_indent="# ")
        lines += [f"{k} = {_literal(declared[k].default)}" for k in rest]
    return "\n".join(lines)


def _cells_of(py: Path):
    import jupytext
    nb = jupytext.read(py)
    code = [c for c in nb.cells if c.cell_type == "code"]
    code[0].source = SETUP.rstrip("\n")
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    if len(params) != 1:
        raise ValueError(f"{py}: {len(params)} cells tagged parameters; one expected")
    params[0].source = parameters_cell(py.stem)
    return nb


def write(folder: Path = NOTEBOOK_DIR, check: bool = False) -> list[Path]:
    """Write each notebook's setup and parameters cells into <folder>/<name>.py, then its .ipynb
    from the .py (outputs stripped, cell ids kept); with check, write nothing. Returns the files
    that differ(ed) from that."""
    import jupytext
    from jupytext.combine import combine_inputs_with_outputs
    changed = []
    for name in NOTEBOOKS:
        py, ipynb = folder / f"{name}.py", folder / f"{name}.ipynb"
        nb = _cells_of(py)
        text = jupytext.writes(nb, fmt="py:percent")
        if ipynb.is_file():   # keep its cell ids, so a rewrite with the same cells is the same file
            nb = combine_inputs_with_outputs(nb, jupytext.read(ipynb), fmt="py:percent")
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        for path, new in ((py, text), (ipynb, jupytext.writes(nb, fmt="ipynb") + "\n")):
            if not path.is_file() or path.read_text(encoding="utf-8") != new:
                changed.append(path)
                if not check:
                    with atomic_path(path) as tmp:
                        tmp.write_text(new, encoding="utf-8")
    return changed


def stale(folder: Path = NOTEBOOK_DIR) -> list[str]:
    """The notebooks whose .ipynb cells are not their .py's, or whose setup or parameters cell is not
    what write() makes. Cells only (type and source): what another jupytext version writes about
    itself (metadata, ids, layout) is no difference."""
    import jupytext
    out = []
    for name in NOTEBOOKS:
        py = folder / f"{name}.py"
        made = [(c.cell_type, c.source) for c in _cells_of(py).cells]
        in_py = [(c.cell_type, c.source) for c in jupytext.read(py).cells]
        ipynb = json.loads((folder / f"{name}.ipynb").read_text(encoding="utf-8"))["cells"]
        if not made == in_py == [(c["cell_type"], "".join(c["source"])) for c in ipynb]:
            out.append(name)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m landmarklib.cells", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 naming the notebooks that differ")
    p.add_argument("--list", action="store_true",
                   help="print the notebooks' names, in the order they run (after --check, if given)")
    args = p.parse_args(argv)
    if args.check:
        names = stale()
        if names:
            print(f"error: notebooks {', '.join(names)}: their .py and .ipynb cells differ, or a setup or parameters "
                  f"cell is not its declaration; run `python -m landmarklib.cells`", file=sys.stderr)
            return 1
    if args.list:
        print("\n".join(NOTEBOOKS))
    if args.check or args.list:
        return 0
    for path in write():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
