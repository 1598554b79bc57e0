import math

import pytest
import torch

from landmarklib.config import make_config
from landmarklib.losses import make_loss
from landmarklib.schedules import Plateau, lr_factor, peak_lr, weight_decay_at


def _lrs(**cfg):
    c = make_config({"warmup": 0, "lr_scaling": "none"} | cfg)
    return [c["lr"] * lr_factor(c, e) for e in range(c["epochs"])]


def test_seed_recipe_8_epochs_at_1e3_then_4_at_1e4():
    assert _lrs(schedule="drop", lr=1e-3, drop_at=[8], drop_factor=0.1, epochs=12) == pytest.approx([1e-3] * 8 + [1e-4] * 4)


def test_the_seed_recipe_by_name():
    c = make_config({"recipe": "seed"})
    assert (c["optimizer"], c["lr"], c["batch_size"], c["epochs"], c["warmup"]) == ("adam", 1e-3, 64, 12, 0.0)
    assert [peak_lr(c) * lr_factor(c, e) for e in range(12)] == pytest.approx([1e-3] * 8 + [1e-4] * 4)
    # a given value wins over the recipe's, even one equal to the default (the CLI passes only flags given)
    assert make_config({"recipe": "seed", "epochs": 6})["drop_at"] == [4]
    assert make_config({"recipe": "seed", "arch": "resnext50"})["arch"] == "resnext50"
    assert make_config({"recipe": "seed", "optimizer": make_config()["optimizer"]})["optimizer"] == "adamw"
    with pytest.raises(ValueError, match="recipe"):
        make_config({"recipe": "mine"})


def test_lr_is_quoted_for_batch_32_and_scaled():
    assert peak_lr(make_config({"lr": 1e-3, "batch_size": 32})) == pytest.approx(1e-3)
    assert peak_lr(make_config({"lr": 1e-3, "batch_size": 128})) == pytest.approx(2e-3)          # sqrt(4)
    assert peak_lr(make_config({"lr": 1e-3, "batch_size": 8})) == pytest.approx(5e-4)            # sqrt(1/4)
    assert peak_lr(make_config({"lr": 1e-3, "batch_size": 128, "lr_scaling": "linear"})) == pytest.approx(4e-3)
    assert peak_lr(make_config({"lr": 1e-3, "batch_size": 128, "lr_scaling": "none"})) == pytest.approx(1e-3)


def test_restart_goes_back_to_the_peak_and_drops_again():
    assert _lrs(schedule="drop", lr=1.0, drop_at=[2, 4], restart_at=[3], epochs=5) == pytest.approx([1, 1, 0.1, 1, 0.1])


def test_weight_decay_switches_on_part_way():
    c = make_config({"optimizer": "adamw", "weight_decay": 0.05, "weight_decay_from": 0.5, "epochs": 6})
    assert [weight_decay_at(c, t) for t in (0, 2.9, 3.0, 5.5)] == [0.0, 0.0, 0.05, 0.05]
    assert weight_decay_at(make_config({"weight_decay": 0.05, "weight_decay_from": 0.0}), 0) == 0.05
    with pytest.raises(ValueError, match="weight_decay_from"):
        make_config({"weight_decay_from": 1.5})


def test_two_drops_and_constant():
    assert _lrs(schedule="drop", lr=1.0, drop_at=[2, 4], drop_factor=0.5, epochs=6) == pytest.approx(
        [1, 1, 0.5, 0.5, 0.25, 0.25])
    assert _lrs(schedule="constant", lr=0.3, epochs=3) == pytest.approx([0.3] * 3)


def test_warmup_ramps_any_schedule_over_its_fraction_of_the_run():
    c = make_config({"schedule": "drop", "epochs": 12, "drop_at": [8], "warmup": 1 / 12})
    assert lr_factor(c, 0.5) == pytest.approx(0.5, abs=2e-3)
    assert lr_factor(c, 1.0) == 1.0 and lr_factor(c, 8.0) == pytest.approx(0.1)
    assert make_config({"epochs": 12})["drop_at"] == [8] and make_config({"epochs": 5})["drop_at"] == [3]


def test_cosine_with_warmup():
    c = make_config({"schedule": "cosine", "epochs": 10, "warmup": 0.2})
    assert lr_factor(c, 1.0) == pytest.approx(0.5, abs=2e-3)             # halfway up the warmup
    assert lr_factor(c, 2.0) == pytest.approx(1.0)
    assert lr_factor(c, 6.0) == pytest.approx(0.5)                       # halfway down: (1 + cos(pi/2)) / 2
    assert lr_factor(c, 10.0) == pytest.approx(0.0, abs=1e-12)


def test_warm_restarts_period_and_multiplier():
    c = make_config({"schedule": "warm_restarts", "epochs": 12, "t0": 2, "t_mult": 2, "warmup": 0})
    assert [lr_factor(c, t) for t in (0, 1, 2, 3, 4, 6, 8)] == pytest.approx(
        [1, 0.5, 1, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 1, 0.5 * (1 + math.cos(math.pi / 4))])


def test_onecycle_shape_matches_torch():
    c = make_config({"schedule": "onecycle", "epochs": 10, "lr": 1.0})
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=1001, pct_start=0.3,
                                                anneal_strategy="cos", cycle_momentum=False)
    theirs = []
    for _ in range(1001):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    for step in (0, 150, 300, 650, 1000):
        assert lr_factor(c, step / 100) == pytest.approx(theirs[step], rel=1e-2, abs=1e-6)   # torch ends phase 1 one step early


def test_plateau_reduces_after_patience():
    p = Plateau(factor=0.1, patience=1)
    for m in [5, 4, 4, 4, 3, 3, 3]:
        p.step(m)
    assert p.scale == pytest.approx(0.01)        # two stalls of 2 epochs
    q = Plateau(factor=0.5, patience=3)
    q.load_state_dict(p.state_dict())
    assert q.state_dict() == p.state_dict()


def test_unknown_names_are_errors():
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor(make_config({"schedule": "linear"}), 0)
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss({"loss": "huber"})


def test_losses_against_hand_computed_values():
    pred = torch.tensor([[0.0, 0.5], [0.01, -0.3]])
    target = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    # errors: 0, 0.5, 0.01, 0.3
    assert make_loss(make_config({"loss": "mse"}))(pred, target).item() == pytest.approx((0.25 + 0.0001 + 0.09) / 4)
    assert make_loss(make_config({"loss": "l1"}))(pred, target).item() == pytest.approx(0.81 / 4)
    beta = 0.02    # 0.01 < beta: 0.5 x^2 / beta; others: |x| - beta / 2
    expect = (0 + (0.5 - 0.01) + 0.5 * 0.0001 / 0.02 + (0.3 - 0.01)) / 4
    assert make_loss(make_config({"loss": "smoothl1", "smoothl1_beta": beta}))(pred, target).item() == pytest.approx(expect)
    w, eps = 0.04, 0.008
    c = w - w * math.log(1 + w / eps)
    expect = (0 + (0.5 - c) + w * math.log(1 + 0.01 / eps) + (0.3 - c)) / 4
    assert make_loss(make_config({"loss": "wing", "wing_w": w, "wing_eps": eps}))(pred, target).item() == pytest.approx(expect, rel=1e-5)
