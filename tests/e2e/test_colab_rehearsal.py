"""The Colab journey, rehearsed: each notebook on a fresh runtime of its own, only Drive shared
(the rehearsed Colab: rehearsed_colab.py; docs/COLAB.md, "The rehearsal")."""
import os
import shutil
import subprocess

import pandas as pd
import pytest

import rehearsed_colab
from conftest import GIT, as_another_jupytext_wrote_it
from rehearsed_colab import Disconnected, Runtime, clean

colab = rehearsed_colab.colab   # the fixture: a rehearsed Colab, for this module's tests


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
        # (`!./run_all.sh` in such a clone: test_colab_main_job.py, beside this walk.)
        clone = rt.content / "landmarklib"
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
