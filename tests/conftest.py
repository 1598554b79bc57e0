import errno
import json
import os
import shutil
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):   # one of several test processes: one thread each, and the same
    os.environ["OMP_NUM_THREADS"] = "1"        # for the processes a test starts, or they fight for the cores

from landmarklib.data import load_split  # noqa: E402
from landmarklib.notebook import NOTEBOOKS  # noqa: E402
from landmarklib.synth import make_dataset  # noqa: E402


E2E = Path(__file__).resolve().parent / "e2e"


def _in_e2e(item: pytest.Item) -> bool:
    return E2E in item.path.parents


def pytest_collection_modifyitems(items):
    """Everything under tests/e2e/ is slow: the quick loop (-m "not slow") leaves it out."""
    for item in items:
        if _in_e2e(item):
            item.add_marker(pytest.mark.slow)


# Jupyter kernels start only in tests/e2e/, and those tests run in one process, one after another: two
# kernels starting at once in two processes can be given the same TCP port (jupyter_client picks free
# ports, then the kernel binds them a second later: nteract/papermill#511), and one dies before it replies.
@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """--dist loadfile, but tests/e2e/ is one unit of work, given out first (it is the longest)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling
    e2e = E2E.relative_to(config.rootpath).as_posix()

    class E2EInOneProcess(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return e2e if nodeid.startswith(e2e + "/") else super()._split_scope(nodeid)

        def _assign_work_unit(self, node) -> None:
            if e2e in self.workqueue:
                self.workqueue.move_to_end(e2e, last=False)
            super()._assign_work_unit(node)

    return E2EInOneProcess(config, log)


@pytest.fixture(scope="session")
def _refusing_jupyter_path(tmp_path_factory) -> Path:
    """A JUPYTER_PATH whose python3 kernel exits at once, saying where a test that starts one belongs."""
    jupyter = tmp_path_factory.mktemp("refusing_jupyter")
    spec = jupyter / "kernels" / "python3"
    spec.mkdir(parents=True)
    why = "this test starts a Jupyter kernel: it belongs in tests/e2e/ (see tests/conftest.py)"
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-c", f"import sys; sys.exit({why!r})", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)", "language": "python"}))
    return jupyter


@pytest.fixture(autouse=True)
def _kernels_only_in_e2e(request, monkeypatch):
    """Outside tests/e2e/, the python3 kernel refuses to start."""
    if not _in_e2e(request.node):
        monkeypatch.setenv("JUPYTER_PATH", str(request.getfixturevalue("_refusing_jupyter_path")))


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A tiny synthetic set shared by read-only tests (60 train with 5 planted bad, 20 test)."""
    return make_dataset(tmp_path_factory.mktemp("synth"), n_train=60, n_test=20, seed=1, bad_fraction=5 / 60,
                        workers=1)


@pytest.fixture
def synth_copy(synth_dir, tmp_path) -> Path:
    """A private copy of the tiny set, for tests that break it."""
    dst = tmp_path / "data"
    shutil.copytree(synth_dir, dst)
    return dst


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def zip_of(src: Path, dest: Path, prefix: str = "DATA/", skip=("SYNTHETIC.json",), sep: str = "/") -> Path:
    """A contest-style zip of the data set `src`: its files under `prefix`, but those named in `skip`;
    `sep` as old Windows tools write it ("\\")."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w") as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file() and p.name not in skip:
                zf.write(p, (prefix + p.relative_to(src).as_posix()).replace("/", sep))
    return dest


ROOT = Path(__file__).resolve().parents[1]
# The smallest run that trains, which every test's run settings start from, and the two variants several
# test files use.
TINY_RUN = {"arch": "resnet18", "crop_size": 32, "batch_size": 8, "device": "cpu", "workers": 1}
TINY_ONE_STEP = TINY_RUN | {"epochs": 1, "max_train_steps": 1}
TINY_DROP = TINY_RUN | {"epochs": 2, "drop_at": [1], "max_train_steps": 2}
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "init.defaultBranch=main"]


def snapshot_repo(dest: Path) -> Path:
    """A git repository at dest holding this working tree as one commit (tracked files and new ones
    git does not ignore): what a clone of it would hold."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for f in files:
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    subprocess.run(GIT + ["init", "-q"], cwd=dest, check=True)
    subprocess.run(GIT + ["add", "-A"], cwd=dest, check=True)
    subprocess.run(GIT + ["commit", "-qm", "snapshot"], cwd=dest, check=True)
    return dest


def as_another_jupytext_wrote_it(clone: Path) -> None:
    """What `jupytext --sync` of another version did to a pair (an older run_all.sh ran it): its version
    in the .py's header, the .ipynb written again with other metadata and cell ids."""
    py = clone / "notebooks" / "data.py"
    py.write_text(py.read_text().replace("#       format_version: '1.3'\n",
                                         "#       format_version: '1.3'\n#       jupytext_version: 1.19.5\n"))
    nb = json.loads((clone / "notebooks" / "data.ipynb").read_text())
    nb["metadata"]["jupytext"]["text_representation"] = {"jupytext_version": "1.19.5"}
    for i, cell in enumerate(nb["cells"]):
        cell["id"] = f"other{i}"
    (clone / "notebooks" / "data.ipynb").write_text(json.dumps(nb, indent=2))


def assert_the_main_job_made_everything(run: Path) -> None:
    """What `QUICK=1 ./run_all.sh` leaves in OUT_DIR/quick: five executed notebooks, ablation plots
    and table, a blocklist, and a validated, locally scored submission."""
    import nbformat
    import pandas as pd
    for name in NOTEBOOKS:
        nb = nbformat.read(run / "notebooks" / f"{name}.ipynb", as_version=4)
        assert nb.metadata["papermill"]["exception"] is None, name
    assert (run / "ablation" / "ablation_lr_drop.png").stat().st_size > 10_000
    assert (run / "ablation" / "ablation_loss.png").is_file() and (run / "ablation" / "ablation_blocklist.png").is_file()
    table = pd.read_csv(run / "ablation" / "results.csv")
    assert len(table) == 9 and set(table["knob"]) == {"lr_drop", "loss", "blocklist"}   # 5 schedules, 2 losses, 2
    assert (run / "ablation" / "results.md").read_text().startswith("| knob |")
    bad = pd.read_csv(run / "bad_annotations.csv")
    assert {"file_name", "score", "reason", "flagged"} <= set(bad.columns)
    check = subprocess.run([sys.executable, "-m", "landmarklib.submission", "check", str(run / "submission.csv"),
                            "--data-dir", str(run / "data")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "local score (synthetic ground truth): MSE" in (run / "notebooks" / "submission.ipynb").read_text()


# --- helpers the test modules share ---------------------------------------------------------------

def run_cli(main, args, capsys) -> tuple[int, str]:
    """A CLI's main() called in-process: (exit code, stderr), and never a traceback on stderr."""
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def script_env() -> dict:
    """The environment a script (run_all.sh, papermill) runs under here: this Python, no bars, one thread."""
    return os.environ | {"PYTHON": sys.executable, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}


def enospc(*a, **k):
    """Stands in for a write on a full disk."""
    raise OSError(errno.ENOSPC, "No space left on device")


def peak_bytes(work) -> int:
    """Peak bytes allocated (numpy's arrays included) while work() runs; what it imports is imported
    before (at the top of the test's file), so that no module's first import is counted."""
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def text_lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(lines))


def break_landmarks(root: Path, fn) -> Path:
    """root's train/landmarks.csv with fn applied to its list of lines."""
    p = root / "train" / "landmarks.csv"
    lines = text_lines(p)
    fn(lines)
    write_lines(p, lines)
    return p


def byte_lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")


def rewrite_line(path: Path, i: int, fn) -> None:
    """Line i (0: the header) of a file replaced by fn(line), as bytes."""
    lines = byte_lines(path)
    lines[i] = fn(lines[i])
    path.write_bytes(b"\n".join(lines))


def row_image(root: Path, row: int) -> Path:
    """The image of landmarks.csv's row `row` (line row + 2)."""
    return root / "train" / "images" / load_split(root, "train").names[row]


def edit_in_place(csv: Path, row: int, n: int = 40) -> None:
    """Change n coordinates of one row (line row + 2) without changing the file's length or mtime."""
    st = csv.stat()
    lines = csv.read_bytes().split(b"\n")
    fields = lines[row + 1].split(b"\t")
    for i in range(1, n + 1):
        fields[i] = fields[i][:-1] + (b"1" if fields[i][-1:] != b"1" else b"2")
    lines[row + 1] = b"\t".join(fields)
    csv.write_bytes(b"\n".join(lines))
    assert csv.stat().st_size == st.st_size
    os.utime(csv, ns=(st.st_atime_ns, st.st_mtime_ns))        # as a sync tool or touch -r does
