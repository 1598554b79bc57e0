"""A rehearsed Colab, for the tests in this folder that walk a Colab journey.

The rehearsed Colab (the `colab` fixture) is built as Colab is, from colabtools' own configuration:
- a Python of its own, which sees this environment's packages as Colab's preinstalled ones (a .pth
  file), so that what a notebook installs lands there and not in the test environment;
- a `python3` kernelspec for it, and Colab's IPython configuration (tests/colab_standin/), so every
  kernel on the "VM", the ones papermill starts included, has its kernel class and google.colab;
- the google.colab stand-in, whose drive.mount needs a person at the frontend;
- COLAB_RELEASE_TAG in the environment, as on a Colab VM;
- "GitHub": a git repository of this working tree, which the setup cell clones (REPO_URL is the one
  thing the rehearsal changes in a notebook, besides the parameters a person would edit);
- "Drive": a folder holding the contest zip (a small synthetic set), linked at <content>/drive when
  mounted.
A runtime is a fresh <content> folder (LANDMARKLIB_COLAB_CONTENT, Colab's /content) with a kernel
started there; the driver sends each cell as Colab's page does (allow_stdin true) and answers the
Drive sign-in.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import venv
import zipfile
from pathlib import Path
from unittest import mock

import nbformat
import pytest
from jupyter_client import KernelManager

from conftest import ROOT, snapshot_repo
from landmarklib.synth import make_dataset


STANDIN = ROOT / "tests" / "colab_standin"


REPO_URL_LINE = 'REPO_URL = "https://github.com/landmarklib/landmarklib"'


class Colab:
    def __init__(self, base: Path):
        self.base = base
        profile = base / "ipython" / "profile_default"
        profile.mkdir(parents=True)
        shutil.copy(STANDIN / "ipython_config.py", profile / "ipython_config.py")
        self.github = snapshot_repo(base / "github")
        self.drive = base / "drive"
        data = make_dataset(base / "contest", n_train=120, n_test=30, seed=3, bad_fraction=0.05, workers=1)
        (self.drive / "MyDrive" / "landmarklib").mkdir(parents=True)   # where the README says to put the zip
        with zipfile.ZipFile(self.drive / "MyDrive" / "landmarklib" / "contest.zip", "w") as zf:
            for p in sorted(data.rglob("*")):
                if p.is_file():
                    zf.write(p, "DATA/" + p.relative_to(data).as_posix())
        shutil.rmtree(data)
        gitlog = base / "bin" / "git"          # logs every git command the notebooks run
        gitlog.parent.mkdir()
        gitlog.write_text(f'#!/bin/sh\necho "git $* pid=$PPID" >> "$COLAB_REHEARSAL_LOG"\nexec {shutil.which("git")} "$@"\n')
        gitlog.chmod(0o755)
        self.env = {"IPYTHONDIR": str(base / "ipython"),
                    "COLAB_RELEASE_TAG": "rehearsal", "COLAB_REHEARSAL_DRIVE": str(self.drive),
                    "PIP_NO_BUILD_ISOLATION": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                    "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
        self.gitlog = gitlog

    def vm(self, folder: Path) -> tuple[Path, dict]:
        """A new VM's Python (nothing installed but Colab's "preinstalled" packages) and its `python3`
        kernelspec: (the interpreter, the environment that makes them the VM's)."""
        python = self._python(folder / "python")
        kernels = folder / "jupyter" / "kernels" / "python3"
        kernels.mkdir(parents=True)
        (kernels / "kernel.json").write_text(json.dumps({
            "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3", "language": "python"}))
        return python, {"JUPYTER_PATH": str(folder / "jupyter"),
                        "PATH": f"{self.gitlog.parent}:{python.parent}:{Path(sys.executable).parent}:{os.environ['PATH']}"}

    @staticmethod
    def _python(prefix: Path) -> Path:
        venv.create(prefix, with_pip=False)
        site = next(prefix.glob("lib/python3*/site-packages"))
        import site as site_mod
        (site / "_preinstalled.pth").write_text("\n".join([str(STANDIN)] + site_mod.getsitepackages()) + "\n")
        # Colab's pip gives another jupytext than the one the notebooks were written with: this one's,
        # calling itself 1.19.5.
        import jupytext
        shutil.copytree(Path(jupytext.__file__).parent, site / "jupytext")
        (site / "jupytext" / "version.py").write_text('"""Jupytext\'s version number"""\n\n__version__ = "1.19.5"\n')
        return prefix / "bin" / "python"


class Disconnected(Exception):
    pass


class Runtime:
    """One Colab runtime: a fresh /content and a kernel started in it, driven as Colab's page drives it."""

    def __init__(self, colab: Colab, name: str):
        self.colab, self.dir = colab, colab.base / name
        shutil.rmtree(self.dir, ignore_errors=True)          # a new VM: nothing of the last one's disk
        self.content = self.dir / "content"
        (self.dir / "tmp").mkdir(parents=True)
        self.content.mkdir()
        self.log, self.pip_log = self.dir / "colab.log", self.dir / "pip.log"
        self.python, vm = colab.vm(self.dir)                 # a new VM: its own Python, nothing installed
        self.env = os.environ | colab.env | vm | {"LANDMARKLIB_COLAB_CONTENT": str(self.content),
                                                  "COLAB_REHEARSAL_LOG": str(self.log), "PIP_LOG": str(self.pip_log),
                                                  "TMPDIR": str(self.dir / "tmp")}
        with mock.patch.dict(os.environ, {"JUPYTER_PATH": vm["JUPYTER_PATH"]}):
            self.km = KernelManager(kernel_name="python3")
            self.km.start_kernel(cwd=str(self.content), env=self.env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)
        self.output: list[str] = []

    def run(self, notebook: str, params: dict, disconnect_after: str | None = None) -> str:
        """Every code cell of notebooks/<notebook>.ipynb (as on GitHub), the parameters cell edited
        as a person would; with disconnect_after, the VM dies as soon as that text is printed."""
        nb = nbformat.read(self.colab.github / "notebooks" / f"{notebook}.ipynb", as_version=4)
        start = len(self.output)
        for cell in (c for c in nb.cells if c.cell_type == "code"):
            source = cell.source.replace(REPO_URL_LINE, f'REPO_URL = "{self.colab.github}"')
            if "parameters" in cell.metadata.get("tags", []):
                source = "\n".join([source] + [f"{k} = {v!r}" for k, v in params.items()])
            self._execute(source, disconnect_after)
        return "".join(self.output[start:])

    def _execute(self, source: str, disconnect_after: str | None) -> None:
        def output(msg):
            content = msg["content"]
            text = content.get("text") or "".join(content.get("data", {}).get("text/plain", ""))
            self.output.append(text)
            if disconnect_after and disconnect_after in text:
                self.km.provisioner.process.kill()           # the VM is gone, mid-run
                raise Disconnected

        def sign_in(msg):                                     # the person answers Drive's sign-in
            self.kc.input("4/rehearsal-authorization-code")
        reply = self.kc.execute_interactive(source, allow_stdin=True, output_hook=output, stdin_hook=sign_in,
                                            timeout=600)
        if reply["content"]["status"] != "ok":
            c = reply["content"]
            raise AssertionError(f"{c['ename']}: {c['evalue']}\n--- output ---\n{''.join(self.output)[-3000:]}")

    def shell(self, command: str) -> str:
        """A `!command` cell (its output); an exit status other than 0 fails the rehearsal."""
        start = len(self.output)
        self._execute(f"!{command}\nassert _exit_code == 0, _exit_code", None)
        return "".join(self.output[start:])

    def restart(self) -> None:
        """Colab's "Restart session": a new kernel, the same VM and /content."""
        self.km.restart_kernel(now=True)
        self.kc.wait_for_ready(timeout=120)

    def events(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.is_file() else []

    def close(self) -> None:
        for info in (self.dir / "tmp").glob(".tensorboard-info/*.info"):   # TensorBoard servers a notebook started
            try:
                os.kill(json.loads(info.read_text())["pid"], signal.SIGKILL)
            except (OSError, ValueError, KeyError):
                pass
        self.kc.stop_channels()
        if self.km.has_kernel:
            self.km.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def colab(tmp_path_factory) -> Colab:
    return Colab(tmp_path_factory.mktemp("colab"))


def clean(clone: Path) -> bool:
    """Whether git sees the clone as it was checked out."""
    return subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True,
                          check=True).stdout == ""
