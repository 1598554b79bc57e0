"""The shape of the package (one home per concept, imports one way) and the one source of defaults."""
import ast
from pathlib import Path

import jupytext
import numpy as np
import pytest
import torch

from landmarklib import config
from landmarklib.config import make_config, notebook_config, run_name
from landmarklib.geometry import decode, encode, fit_affine
from landmarklib.metric import mse_per_image, point_error, select_points

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["data", "eda_bad_annotations", "train", "lr_drop_ablation", "submission"]


def _imports() -> dict[str, set[str]]:
    """module -> the landmarklib modules it imports (relative or absolute), read from the source."""
    graph = {}
    for path in (ROOT / "landmarklib").glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 and node.module:
                    deps.add(node.module.split(".")[0])
                elif node.level == 1:
                    deps |= {a.name for a in node.names}
                elif node.module and node.module.startswith("landmarklib."):
                    deps.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names if a.name.startswith("landmarklib.")}
        graph[path.stem] = deps - {path.stem}
    return graph


def _reachable(graph, start):
    seen, todo = set(), [start]
    while todo:
        for d in graph.get(todo.pop(), ()):
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return seen


def test_imports_flow_one_way_and_only_trainers_import_train():
    graph = _imports()
    for module in graph:
        assert module not in _reachable(graph, module), f"import cycle through {module}"
    # eda trains its out-of-fold models; nothing else in the package climbs back into train.
    assert {m for m, deps in graph.items() if "train" in deps} == {"eda"}
    for module in ("predict", "ablation", "cache", "config", "metric", "plots", "score", "submission"):
        assert "train" not in _reachable(graph, module), module


def _cells(name):
    return jupytext.read(ROOT / "notebooks" / f"{name}.py").cells


def test_the_five_setup_cells_are_identical():
    setups = [next(c.source for c in _cells(n) if c.cell_type == "code") for n in NOTEBOOKS]
    assert "REPO_URL" in setups[0] and all(s == setups[0] for s in setups)


@pytest.mark.parametrize("value, expected", [("false", False), ("False", False), ("0", False), ("true", True),
                                             ("yes", True), (True, True), (0, False)])
def test_booleans_from_text(value, expected):
    assert make_config({"pretrained": value})["pretrained"] is expected


@pytest.mark.parametrize("overrides, message", [
    ({"pretraned": True}, r"unknown config key\(s\) \['pretraned'\]"),
    ({"pretrained": "maybe"}, r"pretrained: 'maybe' is not true or false"),
    ({"epochs": "twelve"}, r"epochs: 'twelve' is not an integer"),
    ({"epochs": 2.5}, r"epochs: 2.5 is not an integer"),
    ({"optimizer": "sgd", "momentum": 0}, r"momentum: sgd with nesterov needs momentum > 0"),
    ({"batch_size": 0}, r"batch_size: 0 is out of range; it takes an integer in \[1, 65536\]"),
    ({"val_fraction": 0}, r"val_fraction: 0.0 is out of range; it takes a finite number in \(0, 1\)"),
    ({"seed": -1}, r"seed: -1 is out of range"),
    ({"loss": "huber"}, r"loss: unknown loss 'huber'; choose one of mse, smoothl1"),
    ({"arch": "inception_v3", "crop_size": 64}, r"crop_size: inception_v3 needs crop_size >= 75"),
    ({"drop_at": "8,x"}, r"drop_at: '8,x' is not a list of integers"),
])
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_config(overrides)


def test_text_from_papermill_becomes_typed_values():
    cfg = make_config({"epochs": "6", "lr": "2e-3", "drop_at": "[3, 5]", "workers": "2", "max_train_steps": None})
    assert (cfg["epochs"], cfg["lr"], cfg["drop_at"], cfg["workers"]) == (6, 2e-3, [3, 5], 2)
    assert make_config()["drop_at"] == [8]                          # 2/3 of 12: the seed recipe


def test_notebook_config_takes_only_config_keys_and_the_quick_profile():
    cfg = notebook_config({"arch": "resnet34", "quick": True, "plt": object(), "epochs": 9}, quick=True)
    run = ("epochs", "crop_size", "batch_size", "max_train_steps")
    assert cfg["arch"] == "resnet34" and {k: cfg[k] for k in run} == {k: config.QUICK[k] for k in run}


def test_the_default_lr_follows_where_the_backbone_starts(synth_dir, tmp_path):
    assert make_config({"data_dir": str(synth_dir)})["lr"] == config.LR_SCRATCH          # demo set: random init
    assert make_config({"data_dir": str(tmp_path)})["lr"] == config.LR_FINETUNE          # contest data: ImageNet
    assert make_config({"data_dir": str(tmp_path), "pretrained": False})["lr"] == config.LR_SCRATCH
    assert make_config({"data_dir": str(synth_dir), "weights_path": "w.pt"})["lr"] == config.LR_FINETUNE
    assert make_config({"data_dir": str(tmp_path), "lr": 1e-2})["lr"] == 1e-2            # given: as given
    assert make_config({"data_dir": str(tmp_path), "recipe": "seed"})["lr"] == 1e-3      # a recipe's own lr


def test_run_names_carry_non_default_keys():
    assert run_name(make_config()) == "resnet18_smoothl1_b32_e12_128px-crop_onecycle_lr0.001_aug-flip_s0"
    assert run_name(make_config({"pretrained": False})) == \
        "resnet18_smoothl1_b32_e12_128px-crop_onecycle_lr0.002_aug-flip_pretrained-False_s0"
    assert run_name(make_config({"weight_decay": 1e-4})).endswith("_weight_decay-0.0001_s0")
    assert run_name(make_config({"recipe": "seed"})) == \
        "resnet18_smoothl1_b64_e12_128px-crop_drop@8_lr0.001_aug-flip_recipe-seed_s0"
    assert run_name(make_config({"recipe": "seed", "weight_decay": 1e-4})).endswith("_recipe-seed_weight_decay-0.0001_s0")


def test_the_metric_is_the_same_on_numpy_and_torch_and_after_the_codec(rng):
    truth = rng.uniform(0, 300, (5, 971, 2))
    pred = truth + rng.normal(0, 2, truth.shape)
    idx = np.stack([rng.permutation(971)[:30] for _ in range(5)])
    numpy_mse = mse_per_image(select_points(pred, idx), select_points(truth, idx))
    torch_mse = mse_per_image(select_points(torch.from_numpy(pred), torch.from_numpy(idx)),
                              select_points(torch.from_numpy(truth), torch.from_numpy(idx)))
    np.testing.assert_allclose(torch_mse.numpy(), numpy_mse, rtol=1e-12)
    np.testing.assert_allclose(point_error(pred, truth).mean(-1), ((pred - truth) ** 2).mean((1, 2)))
    affine = np.stack([fit_affine(300, 260, 64, "crop") for _ in range(5)])
    np.testing.assert_allclose(decode(encode(truth, affine, 64), affine, 64), truth, atol=1e-9)
    np.testing.assert_allclose(decode(torch.from_numpy(encode(truth, affine, 64)), torch.from_numpy(affine), 64).numpy(),
                               truth, atol=1e-9)


def test_run_dirs_written_before_new_keys_still_resume(tmp_path):
    """A config.json from before `compile` existed and when amp was true/false is the same recipe."""
    from landmarklib.config import check_same_recipe
    old = {k: v for k, v in make_config({"pretrained": False}).items() if k != "compile"} | {"amp": True}
    (tmp_path / "config.json").write_text(__import__("json").dumps(old))
    check_same_recipe(tmp_path, make_config({"pretrained": False}))
    with pytest.raises(ValueError, match=r"another recipe \(lr: 0.002 there vs 0.01 now\)"):
        check_same_recipe(tmp_path, make_config({"pretrained": False, "lr": 0.01}))


def test_a_run_dir_from_before_lr_scaling_and_fractional_warmup_reads_as_what_it_ran(tmp_path):
    """Before lr_scaling, lr was literal at any batch, and warmup was warmup_epochs: such a run resumes
    only under the same literal LR and the same warmup, never silently rescaled."""
    from landmarklib.config import check_same_recipe
    then = {"batch_size": 64, "lr": 1e-3, "epochs": 12, "optimizer": "adam", "schedule": "drop", "weight_decay": 0.0}
    old = {k: v for k, v in make_config(then).items() if k not in ("lr_scaling", "warmup", "recipe")}
    (tmp_path / "config.json").write_text(__import__("json").dumps(old | {"warmup_epochs": 3}))
    check_same_recipe(tmp_path, make_config(then | {"lr_scaling": "none", "warmup": 0.25}))
    with pytest.raises(ValueError, match=r"lr_scaling: 'none' there vs 'sqrt' now"):
        check_same_recipe(tmp_path, make_config(then | {"warmup": 0.25}))
