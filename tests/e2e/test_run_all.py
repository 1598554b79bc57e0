"""The main job (run_all.sh) end to end: its errors in one line, before any work."""
import os
import subprocess
import sys

from conftest import ROOT, script_env, snapshot_repo


def test_run_all_refuses_notebooks_whose_pair_differs(tmp_path):
    clone = snapshot_repo(tmp_path / "clone")
    ipynb = clone / "notebooks" / "train.ipynb"
    ipynb.write_text(ipynb.read_text().replace("3 · Train one model", "3 · Train two models"))
    out = subprocess.run(["bash", "run_all.sh"], cwd=clone, env=script_env() | {"QUICK": "1", "OUT_DIR": str(tmp_path)},
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
                         env=script_env() | {"QUICK": "1", "OUT_DIR": str(tmp_path / "out"), "DATA_DIR": str(data)},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert 'FAILED: notebooks/data.ipynb, "In [' in out.stderr
    assert f"error: DataError: {data / 'train' / 'landmarks.csv'}:1: header has 2 columns, expected 1943" in out.stderr
    assert "Traceback" not in out.stderr


def test_run_all_refuses_a_misspelt_data_dir(tmp_path):
    out = subprocess.run(["bash", str(ROOT / "run_all.sh")], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=os.environ | {"PYTHON": sys.executable, "DATA_DIR": str(tmp_path / "dtaa"),
                                           "OUT_DIR": str(tmp_path / "out")})
    assert out.returncode == 2
    assert f"DATA_DIR={tmp_path / 'dtaa'}: train/landmarks.csv not found" in out.stderr
    assert not (tmp_path / "dtaa").exists() and not (tmp_path / "out").exists()


def test_run_all_with_a_python_that_lacks_packages_installs_nothing_and_says_what(tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    before = sorted(p.name for p in (tmp_path / "bare").rglob("*"))
    out = subprocess.run(["bash", "run_all.sh"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=os.environ | {"PYTHON": str(tmp_path / "bare" / "bin" / "python"),
                                           "OUT_DIR": str(tmp_path / "out")})
    assert out.returncode == 2
    assert out.stderr.startswith(f"error: PYTHON={tmp_path / 'bare' / 'bin' / 'python'} lacks torch torchvision")
    assert sorted(p.name for p in (tmp_path / "bare").rglob("*")) == before and not (tmp_path / "out").exists()


def test_run_all_with_out_dir_a_file_is_one_error_line(tmp_path):
    (tmp_path / "afile").write_text("")
    out = subprocess.run(["bash", "run_all.sh"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=os.environ | {"PYTHON": sys.executable, "OUT_DIR": str(tmp_path / "afile")})
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert out.stderr.startswith(f"error: OUT_DIR={tmp_path / 'afile'}: cannot make")
