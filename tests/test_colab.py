"""colab.py: the setup cell's clone, update and install, only for a person in Colab."""
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import GIT, ROOT, as_another_jupytext_wrote_it
from landmarklib import colab


def _kernel(allow_stdin):
    """A kernel executing a cell sent with allow_stdin as given (Colab's page: True; papermill: False)."""
    parent = {"content": {"allow_stdin": allow_stdin}}
    return SimpleNamespace(kernel=SimpleNamespace(get_parent=lambda channel=None: parent))


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
