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
DRIVE_RUNS = MY_DRIVE / "landmarklib" / "runs"


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
    --no-deps. Returns what was installed besides the package."""
    repo = Path(repo)
    missing = install_missing(_requirements(repo / "requirements.txt"), python)
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "-e", str(repo)], check=True)
    return missing


if __name__ == "__main__":   # python -m landmarklib.colab install   (setup_env.sh, in Colab)
    if sys.argv[1:] != ["install"]:
        sys.exit("usage: python -m landmarklib.colab install")
    install_into_colab(Path(__file__).resolve().parents[1])
