"""Where the code runs: a terminal, a notebook with a person at it (Jupyter, Colab), or a headless
kernel (papermill, here or on a Colab VM); Google Drive; and installing into Colab's Python.

Colab's IPython configuration (googlecolab/colabtools, ipython_config.py) names its own kernel class
and loads `google.colab` as an extension in every kernel started on its VMs, including the ones
papermill starts from a `!papermill ...` or `!./run_all.sh` cell. So `google.colab` being loaded says
"a Colab VM", not "a person is watching". What differs is the frontend: Colab's page (like
Jupyter's) sends every cell with `allow_stdin` true, so `input()` and drive.mount's sign-in can reach
a person; papermill's client (nbclient) sends it false, and ipykernel then refuses input requests.
`frontend_attached` reads that flag from the request the kernel is executing.

This module imports nothing heavy: setup_env.sh runs `python -m landmarklib.colab install` before
anything else is installed.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# Colab's working folder (/content: local disk, wiped by a disconnect). The Colab rehearsal in the
# tests points it at a folder of its own; nothing else should set it.
CONTENT = Path(os.environ.get("LANDMARKLIB_COLAB_CONTENT", "/content"))
DRIVE = CONTENT / "drive"
MY_DRIVE = DRIVE / "MyDrive"
DRIVE_HOME = MY_DRIVE / "landmarklib"   # the user's: the contest zip (and test_points.csv beside it) goes here
DRIVE_RUNS = DRIVE_HOME / "runs"         # the suite's: everything a notebook writes for the others


def kernel():
    """The IPython kernel executing this code, or None (a script, a CLI, a terminal IPython)."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return getattr(shell, "kernel", None)


def frontend_attached() -> bool:
    """True when the cell being executed came from a frontend that answers input requests (a person
    at Colab or Jupyter); False in papermill's kernels and outside any kernel."""
    k = kernel()
    if k is None:
        return False
    try:
        return bool(k.get_parent("shell")["content"]["allow_stdin"])   # ipykernel >= 6
    except (AttributeError, KeyError, TypeError):
        return bool(getattr(k, "_allow_stdin", False))


def on_colab() -> bool:
    """A Colab VM (its kernels load google.colab; its environment names the release)."""
    return "google.colab" in sys.modules or bool(os.environ.get("COLAB_RELEASE_TAG"))


def interactive_colab() -> bool:
    """A notebook open in Colab's page, with a person at it (not papermill on a Colab VM)."""
    return "google.colab" in sys.modules and frontend_attached()


def headless_kernel() -> bool:
    """A kernel nobody watches: papermill's, the ablation's children, `!papermill` in Colab."""
    return kernel() is not None and not frontend_attached()


def drive_mounted() -> bool:
    return MY_DRIVE.is_dir()


def mount() -> bool:
    """Google Drive at DRIVE: True when it is mounted already (by an earlier cell, or by the
    interactive notebook that started this headless run on the same VM) or when it can be mounted
    now (interactive Colab: asks the person once). False where it cannot be: a headless kernel
    never tries, since the sign-in needs a person (drive.mount would wait for ever, or fail)."""
    if drive_mounted():
        return True
    if not interactive_colab():
        return False
    from google.colab import drive
    drive.mount(str(DRIVE))
    return drive_mounted()


# ---------------------------------------------------------------------------------------------
# Installing into Colab's Python: its torch is a CUDA build and google-colab pins its kernel stack
# (ipykernel, ipython, notebook, ipywidgets 7): reinstalling or upgrading any of them breaks the
# runtime. So install only the requirements that are missing, with every installed distribution
# pinned at its version (a constraints file): pip may add packages, never change one.

def _requirements(path: Path) -> list[str]:
    """requirements.txt's requirement lines (comments, options and `-e .` left out)."""
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            out.append(line)
    return out


def _dist_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;@]", requirement, maxsplit=1)[0]


def install_missing(requirements: list[str], python: str = sys.executable) -> list[str]:
    """Install those of `requirements` whose distribution is not installed at all (any installed
    version counts as there: Colab's own wins over our ranges), with every installed distribution
    pinned at its version, so pip may add packages but never change one. Returns what it installed."""
    missing = []
    for req in requirements:
        try:
            importlib.metadata.version(_dist_name(req))
        except importlib.metadata.PackageNotFoundError:
            missing.append(req)
    if not missing:
        return []
    pins = sorted({f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()
                   if d.metadata["Name"]})
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(pins) + "\n")
    try:
        print(f"installing what this Python lacks, leaving its packages as they are: {', '.join(missing)}")
        subprocess.run([python, "-m", "pip", "install", "-q", "-c", f.name] + missing, check=True)
    finally:
        os.unlink(f.name)
    return missing


def install_into_colab(repo: Path | str, python: str = sys.executable) -> list[str]:
    """What Colab lacks from repo/requirements.txt (install_missing), then the package itself with
    --no-deps, unless a new process already imports it from `repo`. Returns what was installed
    besides the package."""
    repo = Path(repo)
    missing = install_missing(_requirements(repo / "requirements.txt"), python)
    if not installed(repo, python):
        subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "-e", str(repo)], check=True)
    return missing


def installed(repo: Path, python: str = sys.executable) -> bool:
    """Whether a new process of `python` (a restarted kernel, papermill's) imports landmarklib from
    `repo`, whatever the folder it starts in: installed there, not only found on this kernel's path."""
    out = subprocess.run([python, "-c", "import landmarklib; print(landmarklib.__file__)"], cwd="/",
                         capture_output=True, text=True, env=os.environ | {"PYTHONPATH": ""})
    return out.returncode == 0 and Path(out.stdout.strip()) == Path(repo).resolve() / "landmarklib" / "__init__.py"


# ---------------------------------------------------------------------------------------------
# The notebooks' setup cell. It makes landmarklib importable (on a fresh Colab runtime: a clone in
# /content) and calls setup(), which does the rest here, where it is tested.

def setup() -> None:
    """Everything the setup cell does once landmarklib imports. In Colab, with a person at the page:
    update the clone (update_clone), and install what Colab lacks, the clone included where no new
    kernel imports it yet (install_into_colab: Colab's torch and kernel packages stay as they are). A
    headless kernel (papermill, the ablation's runs) never pulls or installs. Everywhere: work from
    the repository root, where the notebooks' relative paths start."""
    root = Path(__file__).resolve().parents[1]
    checkout = (root / "notebooks").is_dir()
    if checkout and interactive_colab():
        if (root / ".git").is_dir() and update_clone(root):
            for name in [m for m in sys.modules if m.split(".")[0] == "landmarklib"]:
                del sys.modules[name]   # the next import reads the updated code
        install_into_colab(root)   # pip runs only for what is missing
    if checkout and Path.cwd().resolve() != root:
        os.chdir(root)
        print(f"working in {root}, the repository root: relative paths start there")


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)


def _cells(text: str, name: str) -> list | None:
    """A notebook file's cells as (type, source), without what jupytext writes about itself: its
    version in a .py's header, an .ipynb's metadata and ids. None for a file that is not a notebook."""
    if name.endswith(".ipynb"):
        try:
            return [(c["cell_type"], "".join(c["source"])) for c in json.loads(text)["cells"]]
        except (ValueError, KeyError, TypeError):
            return None
    if name.startswith("notebooks/") and name.endswith(".py"):
        return [line for line in text.splitlines() if not re.match(r"#\s+jupytext_version: ", line)]
    return None


def suite_made(repo: Path, name: str) -> bool:
    """Whether a changed file of the clone holds only what the suite's own tools write: a notebook
    pair rewritten by `jupytext --sync` of another version (an older run_all.sh ran it) has the
    same cells as the commit."""
    head = _git(repo, "show", f"HEAD:{name}")
    path = repo / name
    if head.returncode or not path.is_file():
        return False
    cells = _cells(head.stdout, name)
    return cells is not None and cells == _cells(path.read_text(encoding="utf-8", errors="replace"), name)


def update_clone(repo: Path) -> bool:
    """Bring the clone up to date (git pull --ff-only). Changes the suite made are put back first
    (suite_made); a change of the user's blocks the update, and one line says which files and how to
    keep or drop them. Returns whether the code changed."""
    changed = _git(repo, "diff", "--name-only", "HEAD").stdout.splitlines()
    yours = [name for name in changed if not suite_made(repo, name)]
    if yours:
        print(f"not updating {repo}: you changed {', '.join(yours[:4])}{' ...' if len(yours) > 4 else ''}; "
              f"keep your changes with `!git -C {repo} stash` or drop them with `!git -C {repo} checkout -- .`, "
              f"then run this cell again")
        return False
    if changed:
        _git(repo, "checkout", "--", *changed)
    before = _git(repo, "rev-parse", "HEAD").stdout.strip()
    pull = _git(repo, "pull", "-q", "--ff-only")
    if pull.returncode:
        why = (pull.stderr.strip().splitlines() or ["git pull failed"])[-1]
        print(f"could not update {repo} ({why}); using it as it is")
        return False
    after = _git(repo, "rev-parse", "HEAD").stdout.strip()
    if after != before:
        print(f"updated {repo} to {after[:7]}")
    return after != before


if __name__ == "__main__":   # python -m landmarklib.colab install   (setup_env.sh, in Colab)
    if sys.argv[1:] != ["install"]:
        sys.exit("usage: python -m landmarklib.colab install")
    install_into_colab(Path(__file__).resolve().parents[1])
