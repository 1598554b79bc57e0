"""models.py: the model registry (torchvision and timm), starting weights and their fallback."""
import warnings

import numpy as np
import pytest
import timm
import torch
import torchvision

from conftest import TINY_ONE_STEP, run_cli
from landmarklib import models, train
from landmarklib.augment import flip_targets
from landmarklib.config import make_config, use_pretrained
from landmarklib.errors import DataError
from landmarklib.loader import BatchLoader
from landmarklib.models import ARCHS, MIN_INPUT, create_model
from landmarklib.predict import predict_normalized
from landmarklib.train import fit


SMALL_TIMM = ["timm:resnet10t", "timm:mobilenetv3_small_050"]


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


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_arch_trains_and_starts_at_the_mean_shape(arch):
    torch.manual_seed(0)
    mean_shape = np.random.default_rng(0).uniform(-0.5, 0.5, (971, 2)).astype(np.float32)
    model = create_model(arch, mean_shape=mean_shape)
    size = max(64, MIN_INPUT.get(arch, 0) + 5)
    x = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 971, 2)
    np.testing.assert_allclose(out.numpy(), np.broadcast_to(mean_shape, (2, 971, 2)), atol=1e-6)
    model.train()
    out = model(x)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(out).all()


def test_unknown_arch_lists_the_registry():
    with pytest.raises(ValueError, match="unknown arch 'resnet9'.*resnext50"):
        create_model("resnet9")


def test_pretrained_falls_back_with_one_warning(monkeypatch):
    def offline(*a, **k):
        raise OSError("no network")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        model = create_model("resnet18", pretrained=True)
    msgs = [str(x.message) for x in w if "ImageNet weights" in str(x.message)]
    assert len(msgs) == 1 and "random init" in msgs[0]
    assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 971, 2)


def test_weights_path_loads_a_local_file(tmp_path):
    ref = torchvision.models.resnet18()
    torch.save(ref.state_dict(), tmp_path / "w.pt")
    model = create_model("resnet18", weights_path=tmp_path / "w.pt")
    assert torch.equal(model.backbone.conv1.weight, ref.conv1.weight)
    assert model.backbone.fc.out_features == 1942     # the head is still ours
    assert models.LandmarkRegressor is type(model)


def test_resnets_from_scratch_start_each_residual_block_as_the_identity_but_resnet18():
    """zero_init_residual: the last BN scale of every block is 0, so a deep ResNet trains like a shallow
    one at first; other layers keep their random init. resnet18 is exempt (it learns faster without)."""
    blocks = [m for m in create_model("resnet34").modules() if type(m).__name__ == "BasicBlock"]
    assert len(blocks) == 16 and all(float(b.bn2.weight.detach().abs().sum()) == 0 for b in blocks)
    assert all(float(b.bn1.weight.detach().abs().sum()) > 0 for b in blocks)
    blocks = [m for m in create_model("resnet18").modules() if type(m).__name__ == "BasicBlock"]
    assert len(blocks) == 8 and all(float(b.bn2.weight.detach().abs().min()) > 0 for b in blocks)


def test_a_pickle_that_would_run_code_is_refused_unread(tmp_path):
    import os
    import pickle


    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'ran'}",)

    for protocol, held in ((2, "Python objects other than tensors"), (4, "bytes the weights-only reader does not "
                                                                           "allow")):   # 4: refused at its first op
        path = tmp_path / f"evil{protocol}.pt"
        path.write_bytes(pickle.dumps(Payload(), protocol=protocol))
        with warnings.catch_warnings():
            warnings.simplefilter("error")                 # no warning of torch's beside our one line
            with pytest.raises(DataError, match=rf"evil{protocol}.pt: not a readable PyTorch weights file .*: it holds "
                                                rf"{held}.*; refused, nothing in it run"):
                models.read_weights(path)
    assert not (tmp_path / "ran").exists()


def test_a_runs_own_best_pt_loads_whole_as_weights(synth_dir, tmp_path, capsys):
    fit(TINY_ONE_STEP | {"data_dir": str(synth_dir), "cache_dir": str(tmp_path / "cache"), "run_dir": str(tmp_path / "a")},
        progress=False)
    best = torch.load(tmp_path / "a" / "best.pt", weights_only=True)["model"]
    model = create_model("resnet18", weights_path=tmp_path / "a" / "best.pt")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, best[k])                     # backbone and head
    assert model.weights.endswith("backbone 100% head")
    assert "100.0% of resnet18's backbone, and the head" in capsys.readouterr().out


@pytest.mark.parametrize("wrap", [
    lambda s: s,                                                          # torchvision's released weights
    lambda s: {"state_dict": {"module." + k: v for k, v in s.items()}, "epoch": 3},  # timm's train script, DDP
    lambda s: {"model": {"_orig_mod." + k: v for k, v in s.items()}, "optimizer": {}},  # a compiled model's
], ids=["state-dict", "timm-ddp", "compiled"])
def test_the_usual_checkpoint_shapes_load(tmp_path, wrap):
    ref = torchvision.models.resnet18()
    torch.save(wrap(ref.state_dict()), tmp_path / "w.pt")
    model = create_model("resnet18", weights_path=tmp_path / "w.pt")
    torch.testing.assert_close(model.backbone.layer4[1].bn2.running_var, ref.layer4[1].bn2.running_var)
    assert model.weights.endswith("backbone 100%")                 # the 1000-class fc is not our head


def test_weights_for_another_arch_are_refused_saying_how_much_matched(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pt")
    with pytest.raises(DataError, match=r"r18.pt: supplies 2\d% of resnet50's backbone weights \(\d+ of 265 tensors; "
                                        r"first missing 'layer1.0.conv1.weight': \(64, 64, 3, 3\) in the file"):
        create_model("resnet50", weights_path=tmp_path / "r18.pt")


@pytest.mark.parametrize("content, message", [
    (b"hello, not weights\n", "not a readable PyTorch weights file"),
    (None, r"holds no state dict \(found \['epoch'\]\)"),
], ids=["text", "no-state"])
def test_a_weights_file_that_is_not_one_is_refused_before_anything_is_written(synth_dir, tmp_path, capsys, content,
                                                                             message):
    w = tmp_path / "w.pt"
    w.write_bytes(content) if content else torch.save({"epoch": 3}, w)
    rc, err = run_cli(train.main, ["--data-dir", synth_dir, "--cache-dir", tmp_path / "cache", "--run-dir",
                                tmp_path / "run", "--weights-path", w, "--device", "cpu"], capsys)
    assert rc == 2 and err.count("\n") == 1 and err.startswith(f"error: {w}: ")
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()
