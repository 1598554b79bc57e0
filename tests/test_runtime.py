"""runtime.py: the device and its precision."""
import os

import pytest
import torch

from conftest import run_cli
from landmarklib import runtime, train


@pytest.mark.parametrize("capability, amp, expected", [
    ((7, 5), "auto", torch.float16),      # T4: emulated bf16 would be slow
    ((7, 0), "auto", torch.float16),      # V100
    ((8, 0), "auto", torch.bfloat16),     # A100
    ((9, 0), "auto", torch.bfloat16),     # H100 / H200
    ((7, 5), "bf16", torch.bfloat16),     # asked for by name
    ((9, 0), "fp16", torch.float16),
    ((9, 0), "off", None),
])
def test_precision_follows_the_hardware(monkeypatch, capability, amp, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)   # what a T4 says
    assert runtime.autocast_dtype(torch.device("cuda"), amp) is expected
    assert runtime.autocast_dtype(torch.device("cpu"), amp) is None


def test_device_report_fields(synth_dir, tmp_path):
    r = runtime.device_report(torch.device("cpu"), None, True)
    assert {"device", "name", "memory_gb", "compute_capability", "precision", "memory_format", "torch",
            "torchvision", "cuda", "cpus", "python"} <= set(r)
    assert r["precision"] == "fp32" and r["memory_format"] == "contiguous" and r["cpus"] == os.cpu_count()
    line = runtime.format_device_report(r)
    assert line.startswith("device cpu") and f"torch {torch.__version__}" in line


@pytest.mark.parametrize("device", ["meta", "tpu", "cuda:x"])
def test_a_device_that_is_not_one_to_train_on_is_refused_by_name(synth_dir, tmp_path, capsys, device):
    rc, err = run_cli(train.main, ["--data-dir", synth_dir, "--run-dir", tmp_path / "run", "--device", device], capsys)
    assert rc == 2 and err.startswith(f"error: device: {device!r} is not a device to train on")
    assert not (tmp_path / "run").exists()
