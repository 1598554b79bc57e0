"""The notebooks headless through papermill: as the README's lines run them, and as the ablation runs its
children."""
import os
import pty
import re
import select
import subprocess
import sys
import time

import nbformat
import pytest

from conftest import ROOT
from landmarklib import ablation
from landmarklib.errors import DataError


def test_papermill_refuses_a_misspelt_parameter(tmp_path):
    out = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "train.ipynb"),
                          str(tmp_path / "out.ipynb"), "-k", "python3", "-p", "pretraned", "true",
                          "-p", "data_dir", str(tmp_path / "nodata")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=os.environ | {"TQDM_DISABLE": "1"})
    assert out.returncode != 0
    assert "has no parameter(s) ['pretraned']" in out.stderr + out.stdout


def test_the_readme_line_trains_its_arch_with_live_progress_in_a_terminal(tmp_path):
    """README's `papermill notebooks/train.ipynb out.ipynb -p arch resnext50` (quick, on a demo set) in a
    pseudo-terminal, no extra flag: the run is a resnext50 and draws its plots; the kernel's own stderr is
    the terminal, and the bars draw there live; out.ipynb gets a few plain lines per bar and ends with
    the summary line."""
    out_nb = tmp_path / "out.ipynb"
    cmd = [sys.executable, "-m", "papermill", "notebooks/train.ipynb", str(out_nb), "-p", "arch", "resnext50",
           "-p", "quick", "True", "-p", "demo", "True", "-p", "data_dir", str(tmp_path / "data"),
           "-p", "run_dir", str(tmp_path / "run")]
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"} | {"OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    screen, deadline = b"", time.time() + 600
    while time.time() < deadline:
        ready, _, _ = select.select([master], [], [], 1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:            # the terminal closed: papermill is done
                break
            if not chunk:
                break
            screen += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=60)
    os.close(master)
    text = screen.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    assert re.search(r"\repoch 1/4: +\d+%\|", text), text[-3000:]            # the steps of an epoch, live
    assert re.search(r"\rcache train 32px crop: +100%\|", text)             # the cache build, live
    assert "\rresnext50_smoothl1" in text                                     # the epochs of the run
    assert '"arch": "resnext50"' in (tmp_path / "run" / "config.json").read_text()
    assert (tmp_path / "run" / "history.png").is_file() and (tmp_path / "run" / "error_by_part.png").is_file()
    nb = nbformat.read(out_nb, as_version=4)
    logged = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stdout")
    assert "\r" not in logged and re.search(r"epoch 1/4: +0% 0/2", logged) and "epoch 1/4: 100% 2/2" in logged
    assert logged.rstrip().splitlines()[-1].startswith("best val_mse_px")
    assert logged.count("epoch 1/4:") <= 5                                   # a few lines, not a flood


@pytest.mark.slow
def test_a_failed_ablation_run_surfaces_as_its_own_one_line_error(synth_dir, tmp_path):
    base = {"data_dir": str(synth_dir), "arch": "resnet18", "epochs": 4, "crop_size": 32, "batch_size": 8,
            "device": "cpu", "blocklist": str(tmp_path / "missing.csv")}
    with pytest.raises(DataError) as e:
        ablation.run_grid({"constant": {"schedule": "constant"}}, base, [0], tmp_path / "runs",
                          ROOT / "notebooks" / "train.ipynb", quick=True)
    line = str(e.value)
    assert "\n" not in line and line.startswith("ablation run 'constant' seed 0 failed: DataError: ")
    assert "missing.csv" in line and "executed notebook:" in line
