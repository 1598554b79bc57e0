"""Weight averaging (ema), precise BatchNorm statistics and the fine-tuning knobs: the mechanism, and
that what a run validates is what its checkpoints hold."""
import json

import numpy as np
import pytest
import torch

from conftest import TINY_RUN
from landmarklib import engine
from landmarklib.averaging import ema_decay, make_ema, recompute_bn
from landmarklib.cache import build_cache
from landmarklib.config import as_current, make_config
from landmarklib.data import split_indices
from landmarklib.loader import BatchLoader
from landmarklib.metric import mse_per_image
from landmarklib.predict import load_checkpoint, predict_split
from landmarklib.train import fit

TINY = TINY_RUN | {"lr": 1e-3, "epochs": 2}


def _cfg(synth_dir, tmp_path, **kw):
    return TINY | {"data_dir": str(synth_dir), "cache_dir": str(tmp_path / "cache"),
                   "run_dir": str(tmp_path / "run")} | kw


def _bns(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.endswith(("running_mean", "running_var"))}


def test_recompute_bn_sets_the_statistics_to_the_loaders_mean_and_variance(synth_dir, tmp_path):
    cache = build_cache(synth_dir, "train", tmp_path / "cache", 32, workers=1, progress=False)
    bn = torch.nn.BatchNorm2d(3)
    bn.running_mean.fill_(100.0)                      # stale statistics, far from the data's
    model = torch.nn.Sequential(bn).eval()
    rows = np.arange(24)
    recompute_bn(model, BatchLoader(cache.images, None, rows, 8, shuffle=False))
    x = torch.from_numpy(cache.images[rows]).double().div(255).permute(3, 0, 1, 2).reshape(3, -1)
    assert torch.allclose(bn.running_mean.double(), x.mean(1), atol=1e-6)
    # The plain average of the three batches' unbiased variances (momentum None), not a running blend.
    per_batch = x.reshape(3, 3, -1).var(2)
    assert torch.allclose(bn.running_var.double(), per_batch.mean(1), atol=1e-6)
    assert not model.training and bn.momentum == 0.1   # mode and momentum left as they were


def test_ema_averages_with_the_decay_its_fraction_of_the_run_gives():
    assert ema_decay(0.05, 125) == pytest.approx(1 - 1 / 6.25)
    assert ema_decay(0.05, 118_000) == pytest.approx(1 - 1 / 5_900)
    assert ema_decay(0.001, 100) == 0.0               # shorter than a step: the last weights
    model = torch.nn.Linear(2, 1)
    ema = make_ema(model, 0.5, 4)                     # time constant 2 steps: decay 0.5
    ws = [torch.full_like(model.weight, v) for v in (1.0, 3.0, 7.0)]
    for w in ws:
        model.weight.data.copy_(w)
        ema.update_parameters(model)
    # The first update copies; then each moves half-way: 1 -> 2 -> 4.5.
    assert torch.allclose(ema.module.weight, torch.full_like(model.weight, 4.5))
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_checkpoints_hold_the_averaged_weights_with_their_statistics_and_validation_measured_them(synth_dir, tmp_path):
    cfg = _cfg(synth_dir, tmp_path, ema=0.3, precise_bn=16)
    history = fit(cfg, progress=False)
    run = tmp_path / "run"
    last, best = (torch.load(run / f, weights_only=True) for f in ("last.pt", "best.pt"))
    # last.pt: the averaged weights as "model", the training ones beside them for a resume.
    assert last["ema_updates"] == sum(1 for _ in range(2)) * (48 // 8)
    assert set(last["model"]) == set(last["train_model"])
    assert any(not torch.equal(last["model"][k], last["train_model"][k]) for k in last["model"])
    assert "train_model" not in best
    # best.pt's weights score what the history says its epoch scored, on the validation rows.
    row = history[best["epoch"] - 1]
    _, val_idx = split_indices(60, 0.2)
    pred = predict_split([run / "best.pt"], synth_dir, "train", device="cpu", cache_dir=tmp_path / "cache",
                         rows=val_idx, progress=False)
    cache = build_cache(synth_dir, "train", tmp_path / "cache", 32, workers=1, progress=False)
    truth = cache.landmarks[val_idx].astype(np.float64)
    assert float(mse_per_image(pred, truth).mean()) == pytest.approx(row["val_mse_px"], rel=1e-4)
    # Its BatchNorm statistics are the precise ones for its own weights: recomputed again, they stay.
    model, saved_cfg = load_checkpoint(run / "best.pt", torch.device("cpu"))
    train_idx, _ = split_indices(60, 0.2)
    recompute_bn(model, engine._bn_loader(make_config(saved_cfg | {"run_dir": None}), cache, train_idx,
                                             torch.device("cpu")))
    for k, v in _bns(model.state_dict()).items():
        assert torch.allclose(v, best["model"][k], rtol=1e-4, atol=1e-6), k


def test_precise_bn_replaces_the_statistics_training_left(synth_dir, tmp_path):
    fit(_cfg(synth_dir, tmp_path, epochs=1), progress=False)
    plain = _bns(torch.load(tmp_path / "run" / "best.pt", weights_only=True)["model"])
    fit(_cfg(synth_dir, tmp_path, epochs=1, precise_bn=16, run_dir=str(tmp_path / "pbn")), progress=False)
    precise = torch.load(tmp_path / "pbn" / "best.pt", weights_only=True)
    assert "train_model" not in precise               # no ema: the training weights are the validated ones
    # Same training (precise BN only reads), other statistics.
    assert any(not torch.allclose(plain[k], precise["model"][k]) for k in plain)


@pytest.mark.slow
def test_a_resumed_run_with_ema_and_precise_bn_equals_an_uninterrupted_one(synth_dir, tmp_path, monkeypatch):
    cfg = _cfg(synth_dir, tmp_path, epochs=3, ema=0.3, precise_bn=16, augment="full")
    straight = fit(cfg | {"run_dir": str(tmp_path / "a")}, progress=False)
    write = engine._write_history

    def stop_after_first_epoch(path, history):        # a disconnect right after epoch 1 was saved
        write(path, history)
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "_write_history", stop_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg | {"run_dir": str(tmp_path / "b")}, progress=False)
    monkeypatch.setattr(engine, "_write_history", write)
    resumed = fit(cfg | {"run_dir": str(tmp_path / "b")}, progress=False)
    for ra, rb in zip(straight, resumed, strict=True):
        for k in ("train_loss", "val_mse_px", "val_mse30_px"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-6), k
    a, b = (torch.load(tmp_path / d / "last.pt", weights_only=True) for d in "ab")
    for key in ("model", "train_model"):
        assert all(torch.allclose(a[key][k].float(), b[key][k].float(), atol=1e-6) for k in a[key]), key


def test_a_config_written_before_averaging_reads_as_without_it():
    old = {k: v for k, v in make_config({}).items() if k not in ("ema", "precise_bn")}
    assert as_current(old)["ema"] == 0 and as_current(old)["precise_bn"] == 0


def test_fine_tuning_loads_the_weights_and_moves_the_backbone_at_its_share_of_the_lr(synth_dir, tmp_path):
    fit(_cfg(synth_dir, tmp_path, epochs=1), progress=False)        # "pretrained" weights: a run's best.pt
    tuned = tmp_path / "tuned"
    fit(_cfg(synth_dir, tmp_path, epochs=1, run_dir=str(tuned), weights_path=str(tmp_path / "run" / "best.pt"),
             backbone_lr=0.1, max_train_steps=2), progress=False)
    assert json.loads((tuned / "config.json").read_text())["weights"].endswith("backbone 100% head")
    groups = torch.load(tuned / "last.pt", weights_only=True)["optimizer"]["param_groups"]
    assert [g["lr_scale"] for g in groups] == [0.1, 1.0]
    assert groups[0]["lr"] == pytest.approx(0.1 * groups[1]["lr"]) and groups[1]["lr"] > 0
    assert len(groups[1]["params"]) == 2                            # the head: its weight and bias
