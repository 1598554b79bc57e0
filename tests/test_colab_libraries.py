"""What Colab users reach for: timm backbones, ImageNet weights (recorded), TensorBoard, torch.compile."""
import json
import warnings

import numpy as np
import pytest
import timm
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import landmarklib.models as models
from landmarklib.augment import flip_targets
from landmarklib.loader import BatchLoader
from landmarklib.config import make_config, use_pretrained
from landmarklib.models import create_model
from landmarklib.predict import predict_normalized
from landmarklib.train import fit

SMALL_TIMM = ["timm:resnet10t", "timm:mobilenetv3_small_050"]
TINY = {"arch": "resnet18", "crop_size": 32, "batch_size": 8, "device": "cpu", "workers": 1, "epochs": 2,
        "drop_at": [1], "max_train_steps": 2}


@pytest.mark.parametrize("arch", SMALL_TIMM)
def test_timm_models_train_start_at_the_mean_shape_and_flip(arch):
    torch.manual_seed(0)
    mean_shape = np.random.default_rng(0).uniform(-0.5, 0.5, (971, 2)).astype(np.float32)
    model = create_model(arch, mean_shape=mean_shape)
    assert model.weights == "none"
    images = np.random.default_rng(1).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    pred, rows = predict_normalized(model, BatchLoader(images, None, np.arange(4), 2, shuffle=False))
    np.testing.assert_allclose(pred.numpy(), np.broadcast_to(mean_shape, (4, 971, 2)), atol=1e-6)
    # Flip TTA averages a prediction with the mirrored prediction of the mirrored image: for the
    # untrained model (mean shape, whatever the image) that is the mean of the shape and its mirror.
    tta, _ = predict_normalized(model, BatchLoader(images, None, np.arange(4), 2, shuffle=False), flip_tta=True)
    mirrored = flip_targets(torch.from_numpy(mean_shape)[None])[0].numpy()
    np.testing.assert_allclose(tta[0].numpy(), (mean_shape + mirrored) / 2, atol=1e-6)
    model.train()
    out = model(torch.from_numpy(images).permute(0, 3, 1, 2))
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(grads) > 10 and all(torch.isfinite(g).all() for g in grads)


def test_timm_names_are_checked_like_the_registry():
    assert make_config({"arch": "timm:resnet10t"})["arch"] == "timm:resnet10t"
    with pytest.raises(ValueError, match=r"arch: timm has no model 'resnet9000'"):
        make_config({"arch": "timm:resnet9000"})


def test_timm_pretrained_falls_back_with_one_warning(monkeypatch):
    real = timm.create_model

    def offline(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("no network")
        return real(name, pretrained=False, **kw)
    monkeypatch.setattr(timm, "create_model", offline)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        model = create_model("timm:resnet10t", pretrained=True)
    assert [str(x.message) for x in w if "ImageNet weights" in str(x.message)] and model.weights == "none"


def test_pretrained_auto_means_imagenet_for_contest_data_only():
    cfg = make_config()
    assert cfg["pretrained"] == "auto"
    assert use_pretrained(cfg, synthetic=False) is True and use_pretrained(cfg, synthetic=True) is False
    assert use_pretrained(make_config({"pretrained": "false"}), synthetic=False) is False


def test_config_json_records_the_weights_actually_loaded(synth_dir, tmp_path, monkeypatch):
    def run(name, **kw):
        fit(TINY | {"data_dir": str(synth_dir), "cache_dir": str(tmp_path / "cache"),
                    "run_dir": str(tmp_path / name)} | kw, progress=False)
        return json.loads((tmp_path / name / "config.json").read_text())
    assert run("auto")["weights"] == "none"                      # synthetic data: from scratch
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.warns(UserWarning, match="ImageNet weights for resnet18 unavailable"):
        assert run("offline", pretrained=True)["weights"] == "none"
    import torchvision
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "imagenet.pt")
    weights = run("file", weights_path=str(tmp_path / "imagenet.pt"))["weights"]
    assert weights.startswith("file:imagenet.pt sha1:") and weights.endswith(" backbone 100%")   # all but the 1000-class fc
    assert len(weights.split("sha1:")[1].split()[0]) == 12
    # What ImageNet weights would be recorded as, from the same registry that loads them.
    assert str(torchvision.models.get_model_weights("resnet18").DEFAULT) == "ResNet18_Weights.IMAGENET1K_V1"


def test_tensorboard_events_read_back(synth_dir, tmp_path):
    run = tmp_path / "run"
    history = fit(TINY | {"data_dir": str(synth_dir), "cache_dir": str(tmp_path / "cache"), "run_dir": str(run),
                          "epochs": 3, "drop_at": [2]}, progress=False)
    acc = EventAccumulator(str(run / "tb"), size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = acc.Tags()
    val = acc.Scalars("val/val_mse_px")
    assert [e.step for e in val] == [1, 2, 3]
    assert [e.value for e in val] == pytest.approx([h["val_mse_px"] for h in history], rel=1e-6)
    assert [e.step for e in acc.Scalars("train/loss")] == [0, 2, 4]           # step 0 of each 2-step epoch
    for tag in ("train/lr", "epoch/images_per_s", "epoch/data_wait", "epoch/lr", "val/val_mse30_px"):
        assert tag in tags["scalars"], tag
    images = acc.Images("val/predictions")
    assert [e.step for e in images] == [1, 2, 3] and images[0].width > 200


def test_compile_failure_falls_back_and_says_so(synth_dir, tmp_path, monkeypatch, capsys):
    def broken(model, *a, **k):
        raise RuntimeError("no C++ compiler")
    monkeypatch.setattr(torch, "compile", broken)
    cfg = TINY | {"data_dir": str(synth_dir), "cache_dir": str(tmp_path / "cache"), "compile": True}
    h = fit(cfg | {"run_dir": str(tmp_path / "a")}, progress=False)
    assert "torch.compile failed (RuntimeError: no C++ compiler); training uncompiled" in capsys.readouterr().err
    assert len(h) == 2 and np.isfinite(h[-1]["val_mse_px"])
    compiled = []

    def spy(model, *a, **k):          # a compile that works: the loop runs through what it returned
        compiled.append(model)
        return model
    monkeypatch.setattr(torch, "compile", spy)
    assert fit(cfg | {"run_dir": str(tmp_path / "b")}, progress=False)[-1]["epoch"] == 2
    assert len(compiled) == 1 and isinstance(compiled[0], models.LandmarkRegressor)
