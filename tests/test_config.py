"""The shape of the package (one home per concept, imports one way) and the one source of defaults."""
import pytest

from landmarklib import config
from landmarklib.config import make_config, run_name


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
