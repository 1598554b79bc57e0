"""workers.py: process pools started from a fork server."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT
from landmarklib import images
from landmarklib.cache import build_cache
from landmarklib.workers import process_pool


def _parent_pid(_):
    return os.getppid()


def test_pools_start_their_workers_from_a_fork_server_not_from_this_threaded_process(monkeypatch):
    monkeypatch.delenv("LANDMARKLIB_START_METHOD", raising=False)
    torch.set_num_threads(2)
    torch.ones(1000, 1000) @ torch.ones(1000, 1000)                # torch's worker threads are running
    with process_pool(2) as ex:
        assert ex._mp_context.get_start_method() == "forkserver"
        parents = set(ex.map(_parent_pid, range(4)))
    assert os.getpid() not in parents                             # forked by the server, not by us


def test_every_pool_of_the_data_stages_starts_by_forkserver_and_builds_the_same(tmp_path, monkeypatch):
    """The demo set, the image headers and the cache build each use a pool when there is enough work;
    each is started by the fork server, and what it builds equals an in-process build."""
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing
    monkeypatch.delenv("LANDMARKLIB_START_METHOD", raising=False)
    methods = []
    real_init = ProcessPoolExecutor.__init__

    def spy(self, max_workers=None, mp_context=None, *a, **k):
        methods.append((mp_context or multiprocessing.get_context()).get_start_method())
        real_init(self, max_workers, mp_context, *a, **k)
    monkeypatch.setattr(ProcessPoolExecutor, "__init__", spy)
    from landmarklib.synth import make_dataset
    demo = make_dataset(tmp_path / "demo", n_train=120, n_test=10, seed=4, workers=2)
    paths = [str(p) for p in sorted((demo / "train" / "images").iterdir())] * 2
    np.testing.assert_array_equal(images.image_sizes(paths, workers=2), images.image_sizes(paths, workers=1))
    pooled = build_cache(demo, "train", tmp_path / "a", crop_size=32, workers=2, progress=False)
    assert methods == ["forkserver"] * 3
    alone = build_cache(demo, "train", tmp_path / "b", crop_size=32, workers=1, progress=False)
    np.testing.assert_array_equal(pooled.images, alone.images)
    np.testing.assert_array_equal(pooled.affine, alone.affine)


@pytest.mark.slow
def test_a_script_without_a_main_guard_gets_told_what_its_workers_need(tmp_path):
    """forkserver workers import the main script again; one whose top level calls landmarklib would run
    again in each worker. The pool's failure says so, and how to fix it, not a bare BrokenProcessPool."""
    script = tmp_path / "mine.py"
    script.write_text("from landmarklib.synth import make_dataset\n"
                      f"make_dataset({str(tmp_path / 'demo')!r}, n_train=60, n_test=5, seed=0, workers=2)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env=os.environ | {"LANDMARKLIB_START_METHOD": ""})
    assert out.returncode == 1
    assert 'DataError: a worker process died' in out.stderr and 'if __name__ == "__main__":' in out.stderr
