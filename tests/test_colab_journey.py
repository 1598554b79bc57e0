"""The Colab journey's parts, one test each (the whole journey: test_colab_rehearsal.py)."""
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import nbformat
import numpy as np
import pytest
from conftest import GIT, as_another_jupytext_wrote_it

import landmarklib.cache as cache_mod
import landmarklib.csvfiles as csvfiles_mod
import landmarklib.data as data_mod
import landmarklib.eda as eda_mod
from landmarklib import ablation, cells, colab, notebook, progress
from landmarklib.config import make_config, resolve_run_dir
from landmarklib.errors import DataError
from landmarklib.train import summary

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["data", "eda_bad_annotations", "train", "lr_drop_ablation", "submission"]


def _kernel(allow_stdin):
    """A kernel executing a cell sent with allow_stdin as given (Colab's page: True; papermill: False)."""
    parent = {"content": {"allow_stdin": allow_stdin}}
    return SimpleNamespace(kernel=SimpleNamespace(get_parent=lambda channel=None: parent))


@pytest.mark.parametrize("allow_stdin, interactive", [(True, True), (False, False)])
def test_interactive_or_headless_is_read_from_the_frontend_not_from_google_colab(monkeypatch, allow_stdin,
                                                                                 interactive):
    """Colab loads google.colab into every kernel on its VM, papermill's too: only the request says
    whether a person is at the frontend."""
    import IPython
    mounted = []
    monkeypatch.setitem(sys.modules, "google.colab", SimpleNamespace(drive=SimpleNamespace(mount=mounted.append)))
    monkeypatch.setattr(IPython, "get_ipython", lambda: _kernel(allow_stdin))
    assert colab.interactive_colab() is interactive and colab.headless_kernel() is not interactive
    monkeypatch.setattr(colab, "DRIVE", Path("/nonexistent/drive"))
    monkeypatch.setattr(colab, "MY_DRIVE", Path("/nonexistent/drive/MyDrive"))
    colab.mount()
    assert mounted == (["/nonexistent/drive"] if interactive else [])     # headless never asks to sign in
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)              # a script or a CLI
    assert not colab.interactive_colab() and not colab.headless_kernel()


def test_a_zip_on_an_unmounted_drive_is_said_before_anything_else(monkeypatch, tmp_path):
    monkeypatch.setattr(colab, "DRIVE", tmp_path / "drive")
    monkeypatch.setattr(colab, "MY_DRIVE", tmp_path / "drive" / "MyDrive")
    with pytest.raises(DataError, match=r"zip_path .*contest.zip is on Google Drive, which is not mounted"):
        notebook.prepare_data(str(tmp_path / "data"), str(tmp_path / "drive" / "MyDrive" / "contest.zip"))
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_a_rerun_after_an_edit_accepts_what_the_last_run_left(name):
    """Run all, edit a parameter, run all again: the kernel still holds every global the notebook's
    cells bound (literals included); none of them is a misspelt parameter. A new name still is."""
    params, _ = notebook.declared_parameters(name)
    source = "\n".join(c.source for c in nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4).cells
                       if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", []))
    left = {n: 0 for n in notebook._bound_names(source.replace("get_ipython()", "ip")) if n not in params}
    checked = notebook.check_parameters(name, {k: v for k, v in params.items()} | left)
    assert set(checked) == set(params)
    with pytest.raises(ValueError, match=r"has no parameter\(s\) \['a_typo'\]"):
        notebook.check_parameters(name, dict(params) | left | {"a_typo": 1})


def test_the_train_notebooks_leftovers_named_in_the_issue_pass():
    params, _ = notebook.declared_parameters("train")
    assert notebook.check_parameters("train", params | {"PLOT_SAMPLE": 2000, "config": {"arch": "x"}})


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_notebook_brings_its_data_back_and_writes_where_the_others_read(name):
    params, _ = notebook.declared_parameters(name)
    assert {"zip_path", "test_points_path", "demo", "mount_drive"} <= set(params), name
    text = (ROOT / "notebooks" / f"{name}.py").read_text()
    assert "prepare_data(data_dir, zip_path, test_points_path, demo, quick)" in text
    assert "runs_root(mount_drive)" in text or "output_path(" in text


def test_one_setup_cell_everywhere_and_the_badges_name_its_repository():
    setups = {n: [c.source for c in nbformat.read(ROOT / "notebooks" / f"{n}.ipynb", as_version=4).cells
                  if c.cell_type == "code"][0] for n in NOTEBOOKS}
    assert set(setups.values()) == {cells.SETUP.rstrip("\n")}, "the setup cells differ"
    url = re.search(r'REPO_URL = "https://github.com/([^"]+)"', setups["data"]).group(1)
    badges = re.findall(r"colab.research.google.com/github/([^/]+/[^/]+)/blob/main/notebooks/(\w+).ipynb",
                        (ROOT / "README.md").read_text())
    assert sorted(n for _, n in badges) == sorted(NOTEBOOKS) and {r for r, _ in badges} == {url}


def _git(cwd, *args):
    return subprocess.run(GIT + list(args), cwd=cwd, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def clone(tmp_path):
    """A "GitHub" repository holding a notebook pair and a module, and a clone of it."""
    origin = tmp_path / "origin"
    (origin / "notebooks").mkdir(parents=True)
    (origin / "landmarklib").mkdir()
    for name in ("data.py", "data.ipynb"):
        shutil.copy(ROOT / "notebooks" / name, origin / "notebooks" / name)
    (origin / "landmarklib" / "x.py").write_text("X = 1\n")
    _git(origin, "init", "-q")
    _git(origin, "add", "-A")
    _git(origin, "commit", "-qm", "one")
    _git(tmp_path, "clone", "-q", str(origin), "clone")
    (origin / "landmarklib" / "x.py").write_text("X = 2\n")
    _git(origin, "commit", "-qam", "two")
    return tmp_path / "clone"


def test_a_clone_the_suite_changed_updates(clone, capsys):
    as_another_jupytext_wrote_it(clone)
    assert _git(clone, "status", "--porcelain")
    assert colab.update_clone(clone) is True
    assert (clone / "landmarklib" / "x.py").read_text() == "X = 2\n" and not _git(clone, "status", "--porcelain")
    assert "updated" in capsys.readouterr().out
    assert colab.update_clone(clone) is False                       # up to date: nothing to do, nothing said
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("edit", ["notebooks/data.py", "landmarklib/x.py"])
def test_a_clone_with_your_changes_is_left_as_it_is_and_one_line_says_how_to_update(clone, capsys, edit):
    as_another_jupytext_wrote_it(clone)
    path = clone / edit
    path.write_text(path.read_text().replace("1", "3", 1))
    assert colab.update_clone(clone) is False
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith(f"not updating {clone}: you changed {edit}") and f"git -C {clone} stash" in line
    assert "checkout -- ." in line and "3" in path.read_text()                 # your change is still there
    _git(clone, "checkout", "--", edit)                                       # dropped as the line says:
    assert colab.update_clone(clone) is True                                  # now it updates


def test_a_clone_that_cannot_pull_says_so_and_goes_on(clone, capsys):
    shutil.rmtree(clone.parent / "origin")
    assert colab.update_clone(clone) is False
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith(f"could not update {clone} (") and line.endswith("using it as it is")


@pytest.mark.parametrize("interactive", [True, False])
def test_setup_pulls_and_installs_only_for_a_person(monkeypatch, tmp_path, interactive):
    done = []
    monkeypatch.setattr(colab, "interactive_colab", lambda: interactive)
    monkeypatch.setattr(colab, "update_clone", lambda repo: done.append("pull") or False)
    monkeypatch.setattr(colab, "install_into_colab", lambda repo: done.append("install"))
    monkeypatch.chdir(tmp_path)
    colab.setup()
    assert done == ((["pull"] if (ROOT / ".git").exists() else []) + ["install"] if interactive else [])
    assert Path.cwd() == ROOT                                         # everywhere: the repository root


def test_installing_into_colab_runs_pip_only_for_what_a_new_process_cannot_import(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(colab.subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    monkeypatch.setattr(colab, "install_missing", lambda reqs, python: [])
    monkeypatch.setattr(colab, "installed", lambda repo, python: True)
    colab.install_into_colab(ROOT)
    assert calls == []                                                 # installed from here already: no pip
    monkeypatch.setattr(colab, "installed", lambda repo, python: False)
    colab.install_into_colab(ROOT)
    assert calls and calls[0][-3:] == ["--no-deps", "-e", str(ROOT)]
    monkeypatch.undo()
    assert colab.installed(ROOT) and not colab.installed(tmp_path)     # this environment's editable install


def _drive(monkeypatch, tmp_path, zips=()):
    home = tmp_path / "drive" / "MyDrive" / "landmarklib"
    home.mkdir(parents=True)
    monkeypatch.setattr(colab, "DRIVE", tmp_path / "drive")
    monkeypatch.setattr(colab, "MY_DRIVE", tmp_path / "drive" / "MyDrive")
    monkeypatch.setattr(colab, "DRIVE_HOME", home)
    for name in zips:
        (home / name).write_bytes(b"PK")
    return home


def test_the_contest_zip_is_found_in_mydrive_landmarklib(synth_dir, tmp_path, monkeypatch, capsys):
    home = _drive(monkeypatch, tmp_path)
    shutil.make_archive(str(home / "contest"), "zip", synth_dir.parent, synth_dir.name)
    d = notebook.prepare_data(str(tmp_path / "data"))                 # no zip_path: a mounted Drive's convention
    assert (d / "train" / "landmarks.csv").is_file()
    assert f"zip_path: {home / 'contest.zip'} (the one .zip in {home})" in capsys.readouterr().out
    # the data is there now: a rerun needs no zip, and a given data set is never searched for
    (home / "contest.zip").unlink()
    assert notebook.prepare_data(str(tmp_path / "data")) == d


@pytest.mark.parametrize("zips, message", [
    ((), r"no contest zip in .*MyDrive/landmarklib: put it there \(with test_points.csv beside it .*or demo=True"),
    (("a.zip", "b.zip"), r"MyDrive/landmarklib holds 2 zips \(a.zip, b.zip\); give zip_path, the one to use"),
])
def test_no_zip_or_several_on_drive_say_what_to_do_in_one_line(tmp_path, monkeypatch, zips, message):
    _drive(monkeypatch, tmp_path, zips)
    with pytest.raises(DataError, match=message):
        notebook.prepare_data(str(tmp_path / "data"))
    assert not (tmp_path / "data").exists()
    notebook.prepare_data(str(tmp_path / "data"), demo=True, quick=True)     # asked for: the demo set, no search


def test_a_demo_run_says_demo_in_its_folder_name(synth_dir, tmp_path):
    (tmp_path / "contest" / "train").mkdir(parents=True)
    same = {"lr": 1e-3}   # one recipe (by default the LR differs: ImageNet weights on the contest data)
    demo = resolve_run_dir(make_config({"data_dir": str(synth_dir)} | same), tmp_path)["run_dir"]
    contest = resolve_run_dir(make_config({"data_dir": str(tmp_path / "contest")} | same), tmp_path)["run_dir"]
    assert Path(demo).name == "demo_" + Path(contest).name


def test_the_summary_line_names_the_best_epoch_and_the_run_dir():
    h = [{"epoch": 1, "val_mse_px": 30.0, "val_mse30_px": 31.0}, {"epoch": 2, "val_mse_px": 12.5, "val_mse30_px": 13.0},
         {"epoch": 3, "val_mse_px": 14.0, "val_mse30_px": 15.0}]
    assert summary(h, "runs/x") == ("best val_mse_px 12.500 (val_mse30_px 13.000) at epoch 2 of 3; "
                                    "last epoch 14.000; best.pt in runs/x")


def _count_parses(monkeypatch) -> list:
    """The folder of each landmarks.csv read_landmarks parses from here on."""
    calls = []
    real = data_mod.read_landmarks

    def counting(path):
        calls.append(Path(path).parent.name)
        return real(path)
    monkeypatch.setattr(data_mod, "read_landmarks", counting)
    return calls


def test_the_data_stage_parses_each_csv_once(synth_dir, tmp_path, monkeypatch):
    calls = _count_parses(monkeypatch)
    report, caches = cache_mod.check_and_build(synth_dir, tmp_path / "cache", 32, "crop", workers=1, progress=False)
    assert calls == ["train", "test"]                     # test/landmarks.csv: the demo set's ground truth
    assert report["train"]["images"] == len(caches["train"]) == 60 and caches["test"].landmarks is not None


def test_the_eda_stage_parses_landmarks_csv_once_on_a_fresh_runtime(synth_dir, tmp_path, monkeypatch):
    """Each notebook runs on its own runtime: the EDA finds no cache there. Its one parse builds the
    out-of-fold models' cache too, whose sizes replace a pass over the image headers."""
    calls = _count_parses(monkeypatch)
    monkeypatch.setattr(eda_mod, "image_sizes", lambda *a, **k: pytest.fail("image headers read again"))
    df = eda_mod.score_annotations(synth_dir, folds=2, epochs=1, crop_size=32, device="cpu", max_train_steps=1,
                                   cache_dir=tmp_path / "fresh", progress=False)
    assert calls == ["train"] and len(df) == 60


def test_the_eda_folds_are_saved_and_a_rerun_takes_them_up(synth_dir, tmp_path, monkeypatch, capsys):
    kw = {"folds": 2, "epochs": 1, "crop_size": 32, "device": "cpu", "cache_dir": tmp_path / "cache",
          "max_train_steps": 1, "progress": False, "fold_dir": tmp_path / "drive" / "folds"}
    first = eda_mod.out_of_fold_disagreement(synth_dir, **kw)
    assert sorted(p.name for p in (tmp_path / "drive" / "folds").iterdir()) == ["fold1of2.npz", "fold2of2.npz"]
    monkeypatch.setattr(eda_mod, "train_model", lambda *a, **k: pytest.fail("a saved fold was trained again"))
    again = eda_mod.out_of_fold_disagreement(synth_dir, **kw)
    assert first.keys() == again.keys() and all(np.array_equal(first[k], again[k]) for k in first)
    assert "fold 2 of 2: taken from" in capsys.readouterr().out
    # Other settings: that fold is trained again (here: the stand-in says so by failing).
    with pytest.raises(pytest.fail.Exception, match="trained again"):
        eda_mod.out_of_fold_disagreement(synth_dir, **kw | {"epochs": 2})


def test_a_failed_ablation_run_surfaces_as_its_own_one_line_error(synth_dir, tmp_path):
    base = {"data_dir": str(synth_dir), "arch": "resnet18", "epochs": 4, "crop_size": 32, "batch_size": 8,
            "device": "cpu", "blocklist": str(tmp_path / "missing.csv")}
    with pytest.raises(DataError) as e:
        ablation.run_grid({"constant": {"schedule": "constant"}}, base, [0], tmp_path / "runs",
                          ROOT / "notebooks" / "train.ipynb", quick=True)
    line = str(e.value)
    assert "\n" not in line and line.startswith("ablation run 'constant' seed 0 failed: DataError: ")
    assert "missing.csv" in line and "executed notebook:" in line


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
