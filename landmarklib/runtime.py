"""Where a run executes: the device, the mixed-precision type and the memory format."""
from __future__ import annotations

import os
import platform
import re
import sys

import torch
import torchvision

from .colab import on_colab


DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"


def device_name(value) -> str:
    """`value` when it names a device to train on (DEVICE_NAMES); else a ValueError. Spelling only:
    whether this machine has it is resolve_device's question (a run may resume on another machine)."""
    name = str(value).strip().lower()
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", name):
        raise ValueError(f"device: {value!r} is not a device to train on; it takes {DEVICE_NAMES}")
    return name


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA, then Apple's MPS, then the CPU; any other name is taken as given."""
    name = device_name(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} asked for, but this machine has no usable CUDA GPU "
                         f"(use device auto or cpu; in Colab switch the runtime to a GPU)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device: {name!r} asked for, but there are {torch.cuda.device_count()} GPU(s)")
    return device


AMP_MODES = ("auto", "bf16", "fp16", "off")


def autocast_dtype(device: torch.device, amp: str = "auto") -> torch.dtype | None:
    """The autocast type for `amp` (AMP_MODES) on `device`; None means fp32 (CPU and MPS always).

    auto: bf16 on GPUs that have it in hardware (compute capability 8.0 and up), fp16 (with a
    GradScaler) below that. torch.cuda.is_bf16_supported() is not the test: it says True on a
    T4, which only emulates bf16, slowly."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp: unknown mode {amp!r}; choose one of {', '.join(AMP_MODES)}")
    if amp == "off" or device.type != "cuda":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def device_report(device: torch.device, amp_dtype: torch.dtype | None, channels_last: bool) -> dict:
    """What a run executes on, for the log and the run dir: device, memory, capability, precision,
    memory format, library versions and CPU count."""
    report = {"device": str(device), "name": platform.processor() or platform.machine(), "memory_gb": None,
              "compute_capability": None,
              "precision": {None: "fp32", torch.bfloat16: "bf16 autocast",
                            torch.float16: "fp16 autocast + GradScaler"}[amp_dtype],
              "memory_format": "channels_last" if channels_last and device.type == "cuda" else "contiguous",
              "torch": torch.__version__, "torchvision": torchvision.__version__, "cuda": torch.version.cuda,
              "cpus": os.cpu_count(), "python": platform.python_version()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        report |= {"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1),
                   "compute_capability": f"{props.major}.{props.minor}"}
    return report


def format_device_report(r: dict) -> str:
    mem = f", {r['memory_gb']} GB" if r["memory_gb"] else ""
    cc = f", compute capability {r['compute_capability']}" if r["compute_capability"] else ""
    return (f"device {r['device']} ({r['name']}{mem}{cc}); {r['precision']}, {r['memory_format']}; "
            f"torch {r['torch']}, torchvision {r['torchvision']}, CUDA {r['cuda'] or 'none'}; {r['cpus']} CPUs; "
            f"Python {r['python']}")


def warn_if_colab_without_gpu(device: torch.device) -> None:
    """In a Colab session on a CPU runtime, say so loudly: training there takes hours, not minutes."""
    if on_colab() and device.type != "cuda":
        print("=" * 78 + "\nNO GPU: this Colab runtime has no GPU, so training runs on the CPU (very slow).\n"
              "Runtime -> Change runtime type -> Hardware accelerator: GPU (T4), then run all cells again.\n"
              + "=" * 78, file=sys.stderr)


def prepare_model(model: torch.nn.Module, device: torch.device, channels_last: bool = True) -> torch.nn.Module:
    """Move to the device; channels_last memory on CUDA, where convolutions run faster in it."""
    model.to(device)
    if channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model
