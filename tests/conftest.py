import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")

from landmarklib.synth import make_dataset  # noqa: E402


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A tiny synthetic set shared by read-only tests (60 train with 5 planted bad, 20 test)."""
    return make_dataset(tmp_path_factory.mktemp("synth"), n_train=60, n_test=20, seed=1, bad_fraction=5 / 60,
                        workers=1)


@pytest.fixture
def synth_copy(synth_dir, tmp_path) -> Path:
    """A private copy of the tiny set, for tests that break it."""
    import shutil
    dst = tmp_path / "data"
    shutil.copytree(synth_dir, dst)
    return dst


@pytest.fixture
def rng():
    return np.random.default_rng(0)
