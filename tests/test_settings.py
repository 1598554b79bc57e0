"""One declaration per setting (config.RUN, notebook.PARAMETERS): --help, DEFAULTS, the notebooks'
parameters cells, run names and the resume check come from it, and every value it does not allow
is refused with the setting's name before anything is written."""
import json
import math
import re
import shutil

import jupytext
import pytest

from conftest import ROOT
from landmarklib import cells, notebook
from landmarklib.config import (DEFAULTS, RECIPES, RECIPE_KEYS, RESUMABLE_KEYS, RUN, SETTINGS, check_same_recipe,
                                make_config, notebook_config, run_name)
from landmarklib.settings import Setting, defaults, interval
from landmarklib.train import get_args_parser, main

NUMERIC = [s for s in RUN if s.kind in ("int", "float", "ints") and s.bounds]
CHOICE = [s for s in RUN if s.choices]


def _parameters_cell(name: str) -> dict:
    cell = next(c for c in jupytext.read(ROOT / "notebooks" / f"{name}.py").cells
                if "parameters" in c.metadata.get("tags", []))
    namespace: dict = {}
    exec(cell.source, namespace)
    return {k: v for k, v in namespace.items() if k != "__builtins__"}


def _out_of_range(s: Setting) -> list:
    """Below and above the setting's interval (where it has that side), nan and inf."""
    low, high, low_open, high_open = interval(s.bounds)
    values = [low if low_open else low - 1] if math.isfinite(low) else []
    values += [high if high_open else high + 1] if math.isfinite(high) else []
    values = [int(v) if s.kind in ("int", "ints") else v for v in values] + ["nan", "inf"]
    return [[v] if s.kind == "ints" else v for v in values]


def _other_value(s: Setting):
    """A value the setting allows that is not its default (nor the default recipe's)."""
    if s.choices:
        return next(c for c in s.choices if c != s.default)
    if s.kind == "bool":
        return not s.default
    if s.kind in ("path", "str"):
        return {"arch": "resnet34", "device": "cpu"}.get(s.name, "elsewhere/x.csv")
    if s.kind == "ints":
        return [3]
    start = s.default if s.default is not None else interval(s.bounds)[0] + 1
    candidates = [start + 1, start - 1] if s.kind == "int" else [start * 1.5, start / 2, 0.5]
    for v in candidates:
        try:
            if v != s.default and s.check(v) == v:
                return v
        except ValueError:
            pass


def test_defaults_and_help_come_from_the_declaration():
    assert DEFAULTS == defaults(RUN)
    text = " ".join(get_args_parser().format_help().split())
    for s in RUN:
        assert "--" + s.name.replace("_", "-") in text, s.name
        assert "".join(s.help.split()).replace("-", "") in "".join(text.split()).replace("-", ""), s.name  # wrapped
        if s.default is not None:
            assert f"(default: {s.default})" in text, s.name
        if s.bounds:
            assert s.bounds in text, s.name
        if s.choices:
            assert "{" + ",".join(map(str, s.choices)) + "}" in text or "|".join(map(str, s.choices)) in text
    assert "{adam,adamw,sgd}" in text and "(default: smoothl1)" in text


@pytest.mark.parametrize("name", sorted(notebook.PARAMETERS))
def test_each_notebooks_parameters_cell_is_its_declaration(name):
    assert _parameters_cell(name) == defaults(notebook.PARAMETERS[name]), \
        f"notebooks/{name}.py's parameters cell is not its declaration: run `python -m landmarklib.cells`"


def test_the_train_notebook_takes_every_run_setting_and_none_is_the_recipes_value():
    params = notebook.PARAMETERS["train"][:len(RUN)]
    assert [s.name for s in params] == [s.name for s in RUN]
    for s, run in zip(params, RUN):
        assert s == (run.with_default(None) if s.name in RECIPE_KEYS else run), s.name
    assert {"epochs", "batch_size", "crop_size", "loss", "lr", "drop_at"} <= set(RECIPE_KEYS)


def test_running_the_cells_command_changes_nothing_and_puts_back_a_cell_edited_by_hand(tmp_path):
    folder = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", folder)
    assert cells.write(folder) == []            # `python -m landmarklib.cells` on the committed notebooks
    py = folder / "train.py"
    edited = py.read_text().replace('\nseed = 0  # @param {type:"integer"}\n', "\nseed = 1\n")
    py.write_text(edited.replace("import importlib.util, os", "import os"))
    assert cells.write(folder, check=True) == [py] and py.read_text() != (ROOT / "notebooks" / "train.py").read_text()
    assert cells.write(folder) == [py]
    assert py.read_bytes() == (ROOT / "notebooks" / "train.py").read_bytes() and cells.write(folder) == []


@pytest.mark.parametrize("name", sorted(notebook.PARAMETERS))
def test_the_setup_cell_is_short_and_every_form_field_parses(name):
    nb = jupytext.read(ROOT / "notebooks" / f"{name}.py")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].source == cells.SETUP.rstrip("\n")
    lines = [ln for ln in code[0].source.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(lines) <= 10
    params = next(c.source for c in code if "parameters" in c.metadata.get("tags", []))
    fields = [ln for ln in params.splitlines() if "# @param" in ln]
    assert fields and all(re.fullmatch(r'\w+ = .+  # @param (\{type:"\w+"\}|\[.+\]( \{allow-input: true\})?)', f)
                          for f in fields)
    for field in fields:    # a dropdown lists values the setting takes; its default is one of them (or typed)
        if "# @param [" in field:
            name_, _, rest = field.partition(" = ")
            choices = json.loads(rest.split("# @param ", 1)[1].split(" {")[0])
            for choice in choices:
                notebook.check_parameters(name, _parameters_cell(name) | {name_: choice})
    assert "=" not in "".join(ln.split("=", 1)[1] for ln in fields)   # papermill skips a line with two '='


def _given_value(s: Setting, recipe: str):
    """A value of the setting that is not the recipe's own: the global default where it has one (a
    value equal to it was once dropped in the notebooks), else another allowed value."""
    if s.default is not None and s.default != RECIPES[recipe][s.name]:
        return s.default
    other = _other_value(s)
    return other if other != RECIPES[recipe][s.name] else _other_value(s.with_default(other))


@pytest.mark.parametrize("recipe, key", [(r, k) for r, keys in RECIPES.items() for k in keys])
def test_a_value_given_wins_over_the_recipe_in_the_notebook_as_on_the_cli(recipe, key):
    """papermill notebooks/train.ipynb out.ipynb -p recipe R -p KEY VALUE and python -m landmarklib.train
    --recipe R --KEY VALUE train the same config, VALUE included, for every setting a recipe sets."""
    value = _given_value(SETTINGS[key], recipe)
    cell = _parameters_cell("train")
    nb_cfg = notebook_config(notebook.check_parameters("train", cell | {"recipe": recipe, key: value}))
    flag = ["--" + key.replace("_", "-"), *map(str, value if isinstance(value, list) else [value])]
    cli_cfg = make_config(vars(get_args_parser().parse_args(["--recipe", recipe, *flag])))
    assert nb_cfg[key] == value and nb_cfg == cli_cfg
    untouched = make_config({"recipe": recipe})   # and a value not given stays the recipe's
    assert notebook_config(notebook.check_parameters("train", cell | {"recipe": recipe}))[key] == untouched[key]


def test_recipe_defaults_of_the_notebooks_come_from_the_named_recipes():
    eda, abl = (defaults(notebook.PARAMETERS[n]) for n in ("eda_bad_annotations", "lr_drop_ablation"))
    assert {k: eda[k] for k in ("epochs", "crop_size")} == {k: RECIPES["eda"][k] for k in ("epochs", "crop_size")}
    assert {k: abl[k] for k in ("epochs", "crop_size")} == RECIPES["ablation"]


@pytest.mark.parametrize("s", [s for s in RUN if not s.resumable], ids=lambda s: s.name)
def test_the_run_name_says_every_recipe_setting_and_a_resume_refuses_it(s, tmp_path):
    base = make_config({"data_dir": str(tmp_path), "schedule": "drop", "drop_at": [8]})   # drop_at in the name
    other = make_config({"data_dir": str(tmp_path), "schedule": "drop", "drop_at": [8]} | {s.name: _other_value(s)})
    assert other[s.name] != base[s.name]
    assert run_name(other) != run_name(base), s.name
    assert (f"_{s.name}-" in run_name(other)) != s.spelled, "a spelled setting has its place in the name; " \
                                                            "the others appear as _name-value"
    (tmp_path / "config.json").write_text(__import__("json").dumps(base))
    with pytest.raises(ValueError, match=rf"another recipe \((.*, )?{s.name}: "):
        check_same_recipe(tmp_path, other)


@pytest.mark.parametrize("s", [SETTINGS[k] for k in sorted(RESUMABLE_KEYS)], ids=lambda s: s.name)
def test_a_resume_may_change_the_resumable_settings(s, tmp_path):
    base = make_config({"data_dir": str(tmp_path), "drop_at": [8]})    # else the default drop moves with epochs
    (tmp_path / "config.json").write_text(__import__("json").dumps(base))
    other = make_config({"data_dir": str(tmp_path), "drop_at": [8], s.name: _other_value(s)})
    check_same_recipe(tmp_path, other)
    assert run_name(other) == run_name(base) or s.name == "epochs"


def test_the_paths_stay_out_of_run_names():
    name = run_name(make_config({"weights_path": "../../elsewhere/best.pt", "blocklist": "../x/bad.csv"}))
    assert "/" not in name and "_weights_path-best_" in name and "_bl-bad_" in name


@pytest.fixture(scope="module")
def refused(synth_dir, tmp_path_factory):
    """Every out-of-range, nan, inf or unknown value of every run setting, each through the CLI
    against one run dir and cache: (setting, value, exit status, stderr)."""
    import contextlib
    import io
    tmp = tmp_path_factory.mktemp("refused")
    common = ["--data-dir", str(synth_dir), "--run-dir", str(tmp / "run"), "--cache-dir", str(tmp / "cache")]
    cases = [(s, v) for s in NUMERIC for v in _out_of_range(s)] + [(s, "no-such-" + s.name) for s in CHOICE]
    out = []
    for s, value in cases:
        flag = "--" + s.name.replace("_", "-")
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                rc = main(common + [flag, *(map(str, value) if isinstance(value, list) else [str(value)])])
            except SystemExit as e:
                rc = e.code
        out.append((s.name, value, rc, err.getvalue()))
    return tmp, common, out


def test_every_value_a_setting_does_not_allow_is_refused_with_its_name_before_anything_is_written(refused):
    tmp, common, results = refused
    assert len(results) >= 4 * len(NUMERIC) - 10          # below, above (where bounded), nan, inf
    for name, value, rc, err in results:
        assert rc == 2, (name, value, err)
        assert err.startswith(f"error: {name}: ") and err.count("\n") == 1, (name, value, err)
    assert not (tmp / "run").exists() and not (tmp / "cache").exists()
    # the corrected command then runs in the same run dir
    tiny = ["--epochs", "1", "--crop-size", "32", "--batch-size", "8", "--max-train-steps", "1", "--device", "cpu"]
    assert main(common + tiny) == 0
    assert (tmp / "run" / "best.pt").is_file()


@pytest.mark.parametrize("value, message", [
    ({"t0": 0, "schedule": "warm_restarts"}, r"t0: 0 is out of range"),
    ({"t_mult": 0}, r"t_mult: 0 is out of range"),
    ({"lr": float("inf")}, r"lr: inf is not finite"),
    ({"drop_factor": -1}, r"drop_factor: -1.0 is out of range"),
    ({"max_train_steps": 0}, r"max_train_steps: 0 is out of range"),
    ({"seed": 1e20}, r"seed: 100000000000000000000 is out of range"),
    ({"drop_at": [0]}, r"drop_at: 0 is out of range"),
])
def test_the_issues_examples_are_refused(value, message):
    with pytest.raises(ValueError, match=message):
        make_config(value)


@pytest.mark.parametrize("name", sorted(notebook.PARAMETERS))
def test_every_notebook_parameter_is_checked_none_defaults_included(name):
    params = notebook.PARAMETERS[name]
    for s in params:
        bad = ([5] if s.kind == "paths" else 5) if s.kind in ("path", "paths", "str") or s.choices else "x"
        with pytest.raises(ValueError, match=rf"^{s.name}: "):
            notebook.check_parameters(name, defaults(params) | {s.name: bad})
        if s.bounds:
            for value in _out_of_range(s):
                with pytest.raises(ValueError, match=rf"^{s.name}: "):
                    notebook.check_parameters(name, defaults(params) | {s.name: value})


def test_the_examples_of_notebook_parameters_are_refused_and_an_unknown_one_names_the_notebooks():
    subs = defaults(notebook.PARAMETERS["submission"])
    with pytest.raises(ValueError, match=r"^run_dirs: 5 is not a path or a list of paths"):
        notebook.check_parameters("submission", subs | {"run_dirs": 5})
    assert notebook.check_parameters("submission", subs | {"run_dirs": ["a", "b"]})["run_dirs"] == ["a", "b"]
    with pytest.raises(ValueError, match=r"crop_size: 0 is out of range"):
        notebook.check_parameters("data", defaults(notebook.PARAMETERS["data"]) | {"crop_size": 0})
    with pytest.raises(ValueError, match=r"has no parameter\(s\) \['run_dir'\]; its parameters: .*run_dirs"):
        notebook.check_parameters("submission", subs | {"run_dir": "runs/x"})


def test_the_quick_profile_is_applied_in_one_place():
    eda = notebook.check_parameters("eda_bad_annotations", defaults(notebook.PARAMETERS["eda_bad_annotations"])
                                    | {"quick": True})
    ablation = notebook.check_parameters("lr_drop_ablation", defaults(notebook.PARAMETERS["lr_drop_ablation"])
                                         | {"quick": "true"})
    data = notebook.check_parameters("data", defaults(notebook.PARAMETERS["data"]) | {"quick": True})
    assert (eda["folds"], eda["crop_size"], ablation["seeds"], ablation["epochs"], data["crop_size"]) == (2, 32, [0], 4, 32)


def test_a_given_value_wins_over_the_named_recipe():
    """A recipe's values are defaults: --recipe seed --batch-size 32 trains at batch 32 (the CLI passes
    only the flags given)."""
    from landmarklib.train import get_args_parser as parser
    assert make_config(vars(parser().parse_args(["--recipe", "seed", "--batch-size", "32"])))["batch_size"] == 32
    assert make_config(vars(parser().parse_args(["--recipe", "seed"])))["batch_size"] == 64
    assert make_config({"recipe": "eda", "epochs": 12})["epochs"] == 12


def test_a_list_of_paths_given_as_text_is_a_list():
    """papermill -p run_dirs '["runs/a", "runs/b"]' passes text: the README's ensemble command."""
    s = Setting("run_dirs", None, "", kind="paths")
    assert s.check('["runs/a", "runs/b"]') == ["runs/a", "runs/b"]
    assert s.check("runs/a") == "runs/a" and s.check(["runs/a"]) == ["runs/a"]
    for bad in ("[]", '["runs/a", 5]', "[runs/a"):
        with pytest.raises(ValueError, match="run_dirs: .* is not a path or a list of paths"):
            s.check(bad)
