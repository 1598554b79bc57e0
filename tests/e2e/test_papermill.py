"""The notebooks headless through papermill, as the README's lines run them."""
import os
import subprocess
import sys

from conftest import ROOT, script_env


def test_train_notebook_takes_papermill_parameters(tmp_path):
    nb_out = tmp_path / "out.ipynb"
    out = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "train.ipynb"), str(nb_out),
                          "-k", "python3", "-p", "arch", "resnext50", "-p", "quick", "True", "-p", "demo", "True",
                          "-p", "data_dir", str(tmp_path / "data"), "-p", "run_dir", str(tmp_path / "run")],
                         cwd=ROOT, env=script_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert '"arch": "resnext50"' in (tmp_path / "run" / "config.json").read_text()
    assert (tmp_path / "run" / "history.png").is_file() and (tmp_path / "run" / "error_by_part.png").is_file()


def test_papermill_refuses_a_misspelt_parameter(tmp_path):
    out = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "train.ipynb"),
                          str(tmp_path / "out.ipynb"), "-k", "python3", "-p", "pretraned", "true",
                          "-p", "data_dir", str(tmp_path / "nodata")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=os.environ | {"TQDM_DISABLE": "1"})
    assert out.returncode != 0
    assert "has no parameter(s) ['pretraned']" in out.stderr + out.stdout
