"""Process pools for the CPU-bound stages (image headers, the decode cache, the demo set).

The pools' workers are started by the "forkserver" method, not Linux's default "fork": a notebook
kernel (and torch) runs threads, and forking a threaded process can deadlock the child on a lock
another thread held (Python 3.12+ warns of it; 3.14 makes forkserver the default). The server is a
fresh process, started once, that imports the workers' modules once and then forks each worker
from itself, single-threaded: bench/bench_data.py measures it side by side with fork.

    LANDMARKLIB_START_METHOD=fork   another start method (fork, forkserver, spawn), for a comparison
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Iterator

from .errors import DataError

START_METHODS = ("forkserver", "fork", "spawn")
_METHODS = multiprocessing.get_all_start_methods()
# What the forkserver imports once, before it forks any worker: the workers' functions' modules and
# what the main script (or a notebook's kernel) imports, which each worker imports again as __mp_main__:
# from the server's copy, that is free. ("__main__" itself is left out: Python 3.11's forkserver ignores
# it, and where it is honoured a script's unguarded top level would run inside the server.)
PRELOAD = ["numpy", "pandas", "PIL.Image", "torch", "torchvision", "ipykernel.kernelapp",
           "landmarklib.images", "landmarklib.cache", "landmarklib.synth"]


def start_method() -> str:
    """forkserver where the platform has it (Linux, macOS), spawn elsewhere; the environment may override.
    A main script read from standard input (python - <<EOF) cannot be imported again by a fresh worker:
    there, fork (such a script runs no kernel threads)."""
    method = os.environ.get("LANDMARKLIB_START_METHOD") or "forkserver"
    if method not in START_METHODS:
        raise ValueError(f"LANDMARKLIB_START_METHOD: {method!r} is not one of {', '.join(START_METHODS)}")
    main_file = getattr(sys.modules["__main__"], "__file__", None)
    if method != "fork" and main_file is not None and not os.path.isfile(main_file) and "fork" in _METHODS:
        return "fork"
    return method if method in _METHODS else "spawn"


@contextlib.contextmanager
def process_pool(workers: int, initializer=None, initargs: tuple = ()) -> Iterator[ProcessPoolExecutor]:
    """A ProcessPoolExecutor of `workers` processes, started the safe way (start_method()), for a with
    block. A worker that dies (killed for memory; or, in a script of your own, one that re-ran the
    script's top level) is a DataError saying which and what to do, not a bare BrokenProcessPool."""
    context = multiprocessing.get_context(start_method())
    if context.get_start_method() == "forkserver":
        context.set_forkserver_preload(PRELOAD)
    try:
        with ProcessPoolExecutor(workers, mp_context=context, initializer=initializer, initargs=initargs) as ex:
            yield ex
    except BrokenProcessPool:
        raise DataError(f"a worker process died: killed for lack of memory (use fewer workers), or, when "
                        f"landmarklib is called from a script of your own, the script's top level ran again in the "
                        f"worker ({context.get_start_method()} workers import the script: put its code under "
                        f"`if __name__ == \"__main__\":`, or set LANDMARKLIB_START_METHOD=fork)") from None
