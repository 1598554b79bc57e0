"""progress.py: bars that draw live in a terminal and leave plain lines in logs."""
import os
import pty
import re
import select
import subprocess
import sys
import time

import nbformat
import pytest

import landmarklib.csvfiles as csvfiles_mod
from conftest import ROOT
from landmarklib import progress


def test_headless_bars_draw_on_the_terminal_and_leave_plain_lines(monkeypatch, capsys):
    import io
    term = io.StringIO()
    monkeypatch.setattr(progress, "_terminal_stream", term)
    monkeypatch.setattr(progress, "headless_kernel", lambda: True)
    b = progress.bar(total=8, desc="epoch 1/2", unit="step", mininterval=0, disable=False)   # (tests: TQDM_DISABLE)
    for _ in range(8):
        b.update()
    b.close()
    lines = capsys.readouterr().out.splitlines()
    assert [re.match(r"epoch 1/2:\s+(\d+)% (\d)/8", x).groups() for x in lines] == \
        [("0", "0"), ("25", "2"), ("50", "4"), ("75", "6"), ("100", "8")]
    assert "\r" in term.getvalue() and "8/8" in term.getvalue()             # the live bar, redrawn in place


def test_the_csv_parse_shows_progress_at_contest_size(synth_dir, monkeypatch, capsys):
    monkeypatch.setattr(csvfiles_mod, "PARSE_BAR_ROWS", 10)
    csvfiles_mod.read_landmarks(synth_dir / "train" / "landmarks.csv")
    assert "parse landmarks.csv: 100%|██████████| 60/60" in capsys.readouterr().err


@pytest.mark.slow
def test_the_design_cards_command_shows_live_progress_in_a_terminal(tmp_path):
    """`papermill notebooks/train.ipynb out.ipynb -p arch resnet18` (quick, on a demo set) in a pseudo-
    terminal, no extra flag: the kernel's own stderr is the terminal, and the bars draw there live;
    out.ipynb gets a few plain lines per bar and ends with the summary line."""
    out_nb = tmp_path / "out.ipynb"
    cmd = [sys.executable, "-m", "papermill", "notebooks/train.ipynb", str(out_nb), "-p", "arch", "resnet18",
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
    assert "\r" + "resnet18_smoothl1" in text or "\rresnet18_smoothl1" in text   # the epochs of the run
    nb = nbformat.read(out_nb, as_version=4)
    logged = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stdout")
    assert "\r" not in logged and re.search(r"epoch 1/4: +0% 0/2", logged) and "epoch 1/4: 100% 2/2" in logged
    assert logged.rstrip().splitlines()[-1].startswith("best val_mse_px")
    assert logged.count("epoch 1/4:") <= 5                                   # a few lines, not a flood
