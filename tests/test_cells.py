"""cells.py and the paired notebooks: generated cells, in sync, and safe to run again."""
import re

import jupytext
import nbformat
import pytest

from conftest import ROOT
from landmarklib import cells, notebook
from landmarklib.notebook import NOTEBOOKS


def _cells(name):
    return jupytext.read(ROOT / "notebooks" / f"{name}.py").cells


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


def test_the_five_setup_cells_are_identical():
    setups = [next(c.source for c in _cells(n) if c.cell_type == "code") for n in NOTEBOOKS]
    assert "REPO_URL" in setups[0] and all(s == setups[0] for s in setups)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_pair_is_in_sync_and_stripped(name):
    py = jupytext.read(ROOT / "notebooks" / f"{name}.py")
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    assert [(c.cell_type, c.source) for c in py.cells] == [(c.cell_type, c.source) for c in nb.cells], \
        f"notebooks/{name}.py and .ipynb differ: run `python -m landmarklib.cells`"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "outputs not stripped"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    for key in ("data_dir", "quick"):
        assert f"\n{key} = " in "\n" + params[0].source
    assert nb.metadata["kernelspec"]["name"] == "python3" and nb.metadata["accelerator"] == "GPU"
