"""errors.py: one line for the user, the traceback on request."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_a_value_error_says_how_to_see_its_traceback(synth_dir, tmp_path):
    args = [sys.executable, "-m", "landmarklib.train", "--data-dir", str(synth_dir), "--device", "meta"]
    one = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    assert one.returncode == 2 and "LANDMARKLIB_TRACEBACK=1 shows where it came from" in one.stderr
    assert "Traceback" not in one.stderr
    full = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=os.environ | {"LANDMARKLIB_TRACEBACK": "1"})
    assert full.returncode == 1 and "Traceback (most recent call last)" in full.stderr and "runtime.py" in full.stderr
