"""The notebook suite: pairs in sync, thin parameters cells, and every notebook run headless."""
import os
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["data", "eda_bad_annotations", "train", "lr_drop_ablation", "submission"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_pair_is_in_sync_and_stripped(name):
    py = jupytext.read(ROOT / "notebooks" / f"{name}.py")
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    assert [(c.cell_type, c.source) for c in py.cells] == [(c.cell_type, c.source) for c in nb.cells], \
        f"notebooks/{name}.py and .ipynb differ: run `jupytext --sync notebooks/{name}.py`"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "outputs not stripped"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    for key in ("data_dir", "quick"):
        assert f"\n{key} = " in "\n" + params[0].source
    assert nb.metadata["kernelspec"]["name"] == "python3" and nb.metadata["accelerator"] == "GPU"


def _env():
    return os.environ | {"PYTHON": sys.executable, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}


def test_run_all_quick_produces_everything(tmp_path):
    """The main job end to end on a tiny synthetic set: five executed notebooks, ablation plots and
    table, a blocklist, and a validated, locally scored submission."""
    out = subprocess.run(["bash", str(ROOT / "run_all.sh")], cwd=ROOT, env=_env() | {"QUICK": "1", "OUT_DIR": str(tmp_path)},
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run = tmp_path / "quick"
    for name in NOTEBOOKS:
        nb = nbformat.read(run / "notebooks" / f"{name}.ipynb", as_version=4)
        assert nb.metadata["papermill"]["exception"] is None
    assert (run / "ablation" / "ablation_lr_drop.png").stat().st_size > 10_000
    assert (run / "ablation" / "ablation_loss.png").is_file() and (run / "ablation" / "ablation_blocklist.png").is_file()
    table = pd.read_csv(run / "ablation" / "results.csv")
    assert len(table) == 9 and set(table["knob"]) == {"lr_drop", "loss", "blocklist"}   # 5 schedules, 2 losses, 2
    assert (run / "ablation" / "results.md").read_text().startswith("| knob |")
    bad = pd.read_csv(run / "bad_annotations.csv")
    assert {"file_name", "score", "reason", "flagged"} <= set(bad.columns)
    check = subprocess.run([sys.executable, "-m", "landmarklib.submission", "check", str(run / "submission.csv"),
                            "--data-dir", str(run / "data")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "local score (synthetic ground truth): MSE" in (run / "notebooks" / "submission.ipynb").read_text()
    # A second run finds every ablation run finished and trains nothing again.
    again = subprocess.run(["bash", str(ROOT / "run_all.sh")], cwd=ROOT, env=_env() | {"QUICK": "1", "OUT_DIR": str(tmp_path)},
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0
    assert "epoch 1:" not in (run / "notebooks" / "lr_drop_ablation.log").read_text()


def test_run_all_names_the_failing_notebook_and_cell(tmp_path):
    data = tmp_path / "data"
    for d in ("train/images", "test/images"):
        (data / d).mkdir(parents=True)
    (data / "train" / "landmarks.csv").write_text("file_name\tPoint_0_X\n")
    (data / "test" / "test_points.csv").write_text("file_name\tpoint_index_list\n")
    out = subprocess.run(["bash", str(ROOT / "run_all.sh")], cwd=ROOT,
                         env=_env() | {"QUICK": "1", "OUT_DIR": str(tmp_path / "out"), "DATA_DIR": str(data)},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert 'FAILED: notebooks/data.ipynb, "In [' in out.stderr
    assert f"error: DataError: {data / 'train' / 'landmarks.csv'}:1: header has 2 columns, expected 1943" in out.stderr
    assert "Traceback" not in out.stderr


def test_train_notebook_takes_papermill_parameters(tmp_path):
    nb_out = tmp_path / "out.ipynb"
    out = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "train.ipynb"), str(nb_out),
                          "-k", "python3", "-p", "arch", "resnext50", "-p", "quick", "True", "-p", "demo", "True",
                          "-p", "data_dir", str(tmp_path / "data"), "-p", "run_dir", str(tmp_path / "run")],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert '"arch": "resnext50"' in (tmp_path / "run" / "config.json").read_text()
    assert (tmp_path / "run" / "history.png").is_file() and (tmp_path / "run" / "error_by_part.png").is_file()
