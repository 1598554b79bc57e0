"""progress.py: bars that draw live in a terminal and leave plain lines in logs."""
import re

import landmarklib.csvfiles as csvfiles_mod
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
