import warnings

import numpy as np
import pytest
import torch

from landmarklib import models
from landmarklib.models import ARCHS, MIN_INPUT, create_model


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
    import torchvision
    ref = torchvision.models.resnet18()
    torch.save(ref.state_dict(), tmp_path / "w.pt")
    model = create_model("resnet18", weights_path=tmp_path / "w.pt")
    assert torch.equal(model.backbone.conv1.weight, ref.conv1.weight)
    assert model.backbone.fc.out_features == 1942     # the head is still ours
    assert models.LandmarkRegressor is type(model)


def test_resnets_from_scratch_start_each_residual_block_as_the_identity_but_resnet18():
    """zero_init_residual: the last BN scale of every block is 0, so a deep ResNet trains like a shallow
    one at first; other layers keep their random init. resnet18 is exempt (it learns faster without)."""
    from landmarklib.models import create_model
    blocks = [m for m in create_model("resnet34").modules() if type(m).__name__ == "BasicBlock"]
    assert len(blocks) == 16 and all(float(b.bn2.weight.detach().abs().sum()) == 0 for b in blocks)
    assert all(float(b.bn1.weight.detach().abs().sum()) > 0 for b in blocks)
    blocks = [m for m in create_model("resnet18").modules() if type(m).__name__ == "BasicBlock"]
    assert len(blocks) == 8 and all(float(b.bn2.weight.detach().abs().min()) > 0 for b in blocks)


def test_a_pickle_that_would_run_code_is_refused_unread(tmp_path):
    import os
    import pickle

    from landmarklib.errors import DataError

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
