"""The Colab journey, rehearsed: each notebook on a fresh runtime of its own, only Drive shared.

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
import pandas as pd
import pytest
from jupyter_client import KernelManager

from conftest import GIT, ROOT, as_another_jupytext_wrote_it, assert_the_main_job_made_everything, snapshot_repo
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


def _budget(**edits) -> dict:
    """What a step of the walk edits besides nothing: a budget that runs each notebook in seconds on 2
    cores. LANDMARKLIB_REHEARSE_DEFAULTS=1 walks with the notebooks' own defaults (docs/COLAB.md)."""
    return {} if os.environ.get("LANDMARKLIB_REHEARSE_DEFAULTS") == "1" else edits


def test_the_journey_each_notebook_on_its_own_runtime(colab):
    drive_runs = colab.drive / "MyDrive" / "landmarklib" / "runs"
    opened = []

    def runtime(name):
        rt = Runtime(colab, name)
        opened.append(rt)
        return rt

    def on_drive(rt, *parts):     # a path on Drive as that runtime's notebooks spell it
        return str(rt.content.joinpath("drive", "MyDrive", *parts))

    def clean(clone):
        return subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True,
                              check=True).stdout == ""
    try:
        # data.ipynb, opened from its badge, nothing edited: clones, installs, mounts Drive (signing in),
        # finds the zip in MyDrive/landmarklib/ and unpacks it; then a person edits a parameter and runs
        # all cells again in the same kernel.
        rt = runtime("data")
        out = rt.run("data", {})
        assert f"zip_path: {on_drive(rt, 'landmarklib', 'contest.zip')} (the one .zip in " in out
        events = rt.events()
        assert any(e.startswith(f"git clone -q {colab.github}") for e in events)
        assert any(e.startswith(f"mounted {rt.content / 'drive'}") for e in events)
        assert "Successfully installed landmarklib" in rt.pip_log.read_text()
        assert (drive_runs / "data" / "data_grid.png").is_file()
        again = rt.run("data", {"resize_mode": "pad"})
        assert "train_128_pad" in again
        # `!./run_all.sh` in the clone, with Colab's jupytext (another version than the notebooks were
        # written with): the main job leaves the clone as it found it.
        clone = rt.content / "landmarklib"
        main_job = rt.shell(f"cd {clone} && QUICK=1 OUT_DIR={rt.dir / 'main_job'} ./run_all.sh")
        assert "== all notebooks ran" in main_job and clean(clone)
        assert_the_main_job_made_everything(rt.dir / "main_job" / "quick")
        # A clone an older main job left dirty (its `jupytext --sync` rewrote the pairs), a fix on
        # GitHub, then "Restart session": the setup cell puts back what the suite wrote and updates.
        as_another_jupytext_wrote_it(clone)
        (colab.github / "NEWS").write_text("a fix\n")
        subprocess.run(GIT + ["add", "NEWS"], cwd=colab.github, check=True)
        subprocess.run(GIT + ["commit", "-qm", "news"], cwd=colab.github, check=True)
        rt.restart()
        out = rt.run("data", {})
        assert any(e.startswith("git -C") and "pull" in e for e in rt.events())
        assert f"updated {clone} to " in out and (clone / "NEWS").is_file() and clean(clone)
        assert rt.pip_log.read_text().count("Successfully installed landmarklib") == 1   # importable: no pip
        rt.close()

        # eda_bad_annotations.ipynb on a fresh runtime: only the zip on Drive to start from.
        rt = runtime("eda")
        out = rt.run("eda_bad_annotations", _budget(quick=True))
        blocklist = drive_runs / "eda" / "bad_annotations.csv"
        assert f"-> {on_drive(rt, 'landmarklib', 'runs', 'eda', 'bad_annotations.csv')}" in out
        assert len(pd.read_csv(blocklist)) == 120 and len(list((drive_runs / "eda" / "folds").glob("*.npz"))) >= 2
        rt.close()

        # train.ipynb: the VM dies after epoch 2; a new one runs the notebook again and the run resumes
        # from last.pt on Drive. Then a parameter edited, all cells again, same kernel.
        train = _budget(epochs=6, crop_size=32, batch_size=8, max_train_steps=2)
        rt = runtime("train")
        train["blocklist"] = on_drive(rt, "landmarklib", "runs", "eda", "bad_annotations.csv")
        with pytest.raises(Disconnected):
            rt.run("train", train, disconnect_after="epoch 2:")
        rt.close()
        [run_dir] = [p.parent for p in drive_runs.glob("*/last.pt")]
        assert run_dir.name.startswith("demo_resnet18_")             # the demo set says so in the run's name
        rt = runtime("train")                                        # a fresh VM: no clone, no data, no cache
        train["blocklist"] = on_drive(rt, "landmarklib", "runs", "eda", "bad_annotations.csv")
        out = rt.run("train", train)
        assert "resuming" in out and "best val_mse_px" in out and f"in {rt.content / 'drive'}" in out
        assert "settings: recipe landmarklib, " in out             # what will run, said before it runs
        epochs = train.get("epochs", 12)
        assert pd.read_csv(run_dir / "history.csv")["epoch"].tolist() == list(range(1, epochs + 1))
        assert list((rt.dir / "tmp" / ".tensorboard-info").glob("*.info"))   # interactive: TensorBoard shown
        again = rt.run("train", train | {"seed": 1, "epochs": 2})
        assert "best val_mse_px" in again and "_s1" in again
        rt.close()

        # lr_drop_ablation.ipynb: its runs are papermill kernels on the same VM: headless inside Colab.
        rt = runtime("ablation")
        out = rt.run("lr_drop_ablation", _budget(quick=True, grid_name="resize", loss_follow_up=False))
        kernels = {e.split("pid=")[1] for e in rt.events() if e.startswith("kernel ")}
        mounts = [e for e in rt.events() if e.startswith("mount")]
        assert len(kernels) >= 3                                       # the notebook's and its runs'
        assert len({m.split("pid=")[1] for m in mounts}) == 1          # only the notebook's kernel mounted
        notebook_kernel = next(e for e in rt.events() if e.startswith("kernel ")).split("pid=")[1]
        assert sum(e.startswith("git clone") for e in rt.events()) == 1                # the setup cell's only
        assert all(e.endswith(f"pid={notebook_kernel}") for e in rt.events() if e.startswith("git "))
        assert rt.pip_log.read_text().count("Successfully installed landmarklib") == 1   # the setup cell's only
        assert not list((rt.dir / "tmp").glob(".tensorboard-info/*.info"))   # no TensorBoard server headless
        assert "epoch 4:" in out and "best val_mse_px" in out           # the runs' own lines, relayed
        assert (drive_runs / "ablation" / "results.md").is_file()
        rt.close()

        # submission.ipynb, nothing edited: the latest run on Drive, the submission written to Drive.
        rt = runtime("submission")
        out = rt.run("submission", {})
        assert f"checkpoints from: {rt.content / 'drive'}" in out
        assert "local score (synthetic ground truth): MSE" in out
        assert (drive_runs / "submission.csv").is_file()
        # `!papermill` from a folder other than the repository root: the kernel finds the installed
        # landmarklib and works from the repository root; it neither clones nor installs.
        elsewhere = rt.content / "elsewhere"
        elsewhere.mkdir()
        out = rt.shell(f"cd {elsewhere} && papermill {rt.content / 'landmarklib' / 'notebooks' / 'submission.ipynb'} "
                       f"out.ipynb -p out {elsewhere / 'sub.csv'} --log-output")
        assert (elsewhere / "sub.csv").is_file() and (elsewhere / "out.ipynb").is_file()
        assert f"working in {rt.content / 'landmarklib'}" in out
        assert sum(e.startswith("git clone") for e in rt.events()) == 1 and not list(elsewhere.glob("landmarklib"))
        assert rt.pip_log.read_text().count("Successfully installed landmarklib") == 1
        rt.close()
    finally:
        for rt in opened:
            rt.close()


def test_run_all_in_colab_leaves_colab_packages_as_they_are(colab, tmp_path):
    """`!./run_all.sh` (or ./run_tests.sh) in Colab: setup_env.sh installs only what Colab's Python
    lacks, and landmarklib with --no-deps. Colab ships ipywidgets 7 while requirements.txt asks for
    >= 8: installing requirements.txt there would replace it."""
    python, vm = colab.vm(tmp_path / "vm")
    site = next((tmp_path / "vm" / "python").glob("lib/python3*/site-packages"))
    pinned = site / "ipywidgets-7.7.1.dist-info"
    pinned.mkdir(exist_ok=True)
    (pinned / "METADATA").write_text("Metadata-Version: 2.1\nName: ipywidgets\nVersion: 7.7.1\n")
    (pinned / "INSTALLER").write_text("colab\n")
    repo = tmp_path / "landmarklib"
    shutil.copytree(colab.github, repo)
    env = os.environ | colab.env | vm | {"PIP_LOG": str(tmp_path / "pip.log")}
    for key in ("PYTHON", "VIRTUAL_ENV", "CONDA_PREFIX"):
        env.pop(key, None)
    out = subprocess.run(["bash", "-c", "source ./setup_env.sh && echo \"PY=$PY\""], cwd=repo, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"PY={python.parent / 'python3'}" in out.stdout
    version = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('ipywidgets'))"],
                             capture_output=True, text=True, env=env).stdout.strip()
    assert version == "7.7.1"
    log = (tmp_path / "pip.log").read_text()
    assert "Successfully installed landmarklib" in log and "-r requirements.txt" not in out.stdout
