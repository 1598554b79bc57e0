"""tblog.py: TensorBoard event files that read back."""
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import TINY_DROP
from landmarklib.train import fit


def test_tensorboard_events_read_back(synth_dir, tmp_path):
    run = tmp_path / "run"
    history = fit(TINY_DROP | {"data_dir": str(synth_dir), "cache_dir": str(tmp_path / "cache"), "run_dir": str(run),
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
