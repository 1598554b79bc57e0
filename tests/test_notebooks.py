"""The notebook suite: pairs in sync, thin parameters cells, and every notebook run headless."""
import os
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
from conftest import snapshot_repo

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["data", "eda_bad_annotations", "train", "lr_drop_ablation", "submission"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_pair_is_in_sync_and_stripped(name):
    py = jupytext.read(ROOT / "notebooks" / f"{name}.py")
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    assert [(c.cell_type, c.source) for c in py.cells] == [(c.cell_type, c.source) for c in nb.cells], \
        f"notebooks/{name}.py and .ipynb differ: run `python -m landmarklib.cells`"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "outputs not stripped"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    for key in ("data_dir", "quick"):
        assert f"\n{key} = " in "\n" + params[0].source
    assert nb.metadata["kernelspec"]["name"] == "python3" and nb.metadata["accelerator"] == "GPU"


def _env():
    return os.environ | {"PYTHON": sys.executable, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}


def test_run_all_refuses_notebooks_whose_pair_differs(tmp_path):
    clone = snapshot_repo(tmp_path / "clone")
    ipynb = clone / "notebooks" / "train.ipynb"
    ipynb.write_text(ipynb.read_text().replace("3 · Train one model", "3 · Train two models"))
    out = subprocess.run(["bash", "run_all.sh"], cwd=clone, env=_env() | {"QUICK": "1", "OUT_DIR": str(tmp_path)},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "run `python -m landmarklib.cells`" in out.stderr and "notebooks train:" in out.stderr
    assert not (tmp_path / "quick" / "notebooks" / "data.ipynb").exists()


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
