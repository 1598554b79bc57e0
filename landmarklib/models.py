"""Model factory: torchvision and timm backbones with a 971x2 regression head.

    model = create_model("resnext50", mean_shape=targets.mean(0))
    model = create_model("timm:resnet34d", pretrained=True)

Adding a torchvision architecture is one line in ARCHS: our name -> torchvision builder name;
every timm model is there already as "timm:<name>".
The model takes uint8 or [0, 1] float images (B, 3, H, W), normalizes them with the
ImageNet statistics itself, and returns normalized landmarks (B, 971, 2).
"""
from __future__ import annotations

import hashlib
import pickle
import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from .errors import DataError
from .layout import N_POINTS

ARCHS: dict[str, str] = {
    "resnet18": "resnet18",
    "resnet34": "resnet34",
    "resnet50": "resnet50",
    "resnet101": "resnet101",
    "resnet152": "resnet152",
    "resnext50_32x4d": "resnext50_32x4d",
    "resnext50": "resnext50_32x4d",
    "resnext101_32x8d": "resnext101_32x8d",
    "vgg16": "vgg16",
    "vgg16_bn": "vgg16_bn",
    "inception_v3": "inception_v3",
    "densenet121": "densenet121",
    "densenet169": "densenet169",
    "densenet201": "densenet201",
    "efficientnet_b0": "efficientnet_b0",
    "efficientnet_b1": "efficientnet_b1",
    "efficientnet_b2": "efficientnet_b2",
    "efficientnet_b3": "efficientnet_b3",
    "efficientnet_b4": "efficientnet_b4",
    "convnext_tiny": "convnext_tiny",
    "mobilenet_v3_large": "mobilenet_v3_large",
}
MIN_INPUT = {"inception_v3": 75}
TIMM_PREFIX = "timm:"   # arch="timm:<name>": any model timm.list_models() knows, through timm.create_model
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class LandmarkRegressor(nn.Module):
    """Backbone whose last Linear layer regresses 2 x 971 normalized coordinates. `weights` says
    what the backbone started from: 'none', 'torchvision:<weights>', 'timm:<tag>' or 'file:<path>'."""

    def __init__(self, backbone: nn.Module, mean=IMAGENET_MEAN, std=IMAGENET_STD, weights: str = "none"):
        super().__init__()
        self.backbone = backbone
        self.weights = weights
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images
        x = (x - self.mean) / self.std
        out = self.backbone(x)
        if isinstance(out, tuple):   # inception_v3 in train mode with an aux head
            out = out[0]
        return out.view(-1, N_POINTS, 2)


def _last_linear(model: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    parent_name, linear = None, None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            parent_name, linear = name, m
    parent_path, _, attr = parent_name.rpartition(".")
    return model.get_submodule(parent_path) if parent_path else model, attr, linear


def check_arch(arch: str) -> None:
    """A registered torchvision name or 'timm:<any name timm.list_models() knows>'; else ValueError."""
    if arch.startswith(TIMM_PREFIX):
        try:
            import timm
        except ImportError:
            raise ValueError(f"arch {arch!r} needs timm: pip install timm (Colab has it)") from None
        if not timm.is_model(arch[len(TIMM_PREFIX):]):
            raise ValueError(f"arch: timm has no model {arch[len(TIMM_PREFIX):]!r} (see timm.list_models())")
    elif arch not in ARCHS:
        raise ValueError(f"arch: unknown arch {arch!r}; registered: {', '.join(sorted(ARCHS))}, "
                         f"or timm:<name>")


def _unavailable(arch: str, e: Exception) -> None:
    warnings.warn(f"ImageNet weights for {arch} unavailable ({type(e).__name__}: {str(e)[:80]}); "
                  f"training from random init", stacklevel=3)


# From scratch, each residual block of a ResNet / ResNeXt starts as the identity (its last BN scale at
# 0, Goyal et al. 2017; without it the deep ones stay at the mean shape), except in these: resnet18
# learns faster without it (docs/RESULTS.md, "The default recipe, and why").
IDENTITY_START_EXEMPT = {"resnet18"}


def _torchvision_backbone(arch: str, pretrained: bool) -> tuple[nn.Module, str]:
    name = ARCHS[arch]
    builder = getattr(torchvision.models, name)
    if pretrained:
        try:
            weights = torchvision.models.get_model_weights(name).DEFAULT
            backbone = builder(weights=weights)
            if getattr(backbone, "AuxLogits", None) is not None:   # pretrained inception comes with its aux head
                backbone.aux_logits, backbone.AuxLogits = False, None
            return backbone, f"torchvision:{weights}"
        except Exception as e:  # no network, no cache, a proxy: anything but a model
            _unavailable(arch, e)
    kwargs = {"aux_logits": False, "init_weights": False} if name == "inception_v3" else {}
    if name.startswith(("resnet", "resnext", "wide_resnet")):
        kwargs = {"zero_init_residual": name not in IDENTITY_START_EXEMPT}
    return builder(weights=None, **kwargs), "none"


def _timm_backbone(arch: str, pretrained: bool) -> tuple[nn.Module, str]:
    import timm
    name = arch[len(TIMM_PREFIX):]
    if pretrained:
        try:
            backbone = timm.create_model(name, pretrained=True, num_classes=2 * N_POINTS)
            cfg = backbone.pretrained_cfg
            return backbone, f"timm:{cfg.get('architecture', name)}.{cfg.get('tag') or 'default'}"
        except Exception as e:  # as above: timm's hub download failed
            _unavailable(arch, e)
    return timm.create_model(name, pretrained=False, num_classes=2 * N_POINTS), "none"


def create_model(arch: str, pretrained: bool = False, weights_path: str | Path | None = None,
                 mean_shape: np.ndarray | torch.Tensor | None = None) -> LandmarkRegressor:
    """Build `arch` with its head replaced by a 1942-output regressor.

    The head starts with zero weights and the mean training shape (normalized) as bias, so
    the untrained model predicts the mean shape. pretrained=True tries the ImageNet weights
    (torchvision's, or timm's own loading for 'timm:<name>') and falls back to random init with
    one warning where they can't be had. weights_path loads a local state dict into the backbone
    (e.g. ImageNet weights copied to Drive).
    """
    check_arch(arch)
    is_timm = arch.startswith(TIMM_PREFIX)
    backbone, weights = (_timm_backbone if is_timm else _torchvision_backbone)(arch, pretrained)
    bias = (torch.as_tensor(np.asarray(mean_shape, dtype=np.float32)).reshape(-1) if mean_shape is not None
            else torch.zeros(2 * N_POINTS))
    if is_timm:
        head = backbone.get_classifier()      # timm built it with 1942 outputs
    else:
        parent, attr, old = _last_linear(backbone)
        head = nn.Linear(old.in_features, 2 * N_POINTS)
        setattr(parent, attr, head)
    nn.init.zeros_(head.weight)
    with torch.no_grad():
        head.bias.copy_(bias)
    if weights_path is not None:
        weights = load_weights(backbone, head, weights_path, arch)
    cfg = getattr(backbone, "pretrained_cfg", {}) if is_timm else {}
    return LandmarkRegressor(backbone, cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD), weights)


def param_groups(model: LandmarkRegressor, backbone_lr: float = 1.0) -> list[dict]:
    """The optimizer's parameter groups: the backbone's, its LR scaled by `backbone_lr` (its
    "lr_scale"), and the head's (the last Linear layer) at the full LR. One group when they are equal."""
    if backbone_lr == 1.0:
        return [{"params": list(model.parameters()), "lr_scale": 1.0}]
    head = _last_linear(model.backbone)[2]
    head_ids = {id(p) for p in head.parameters()}
    return [{"params": [p for p in model.parameters() if id(p) not in head_ids], "lr_scale": backbone_lr},
            {"params": list(head.parameters()), "lr_scale": 1.0}]


# Where the usual checkpoints keep their weights: timm's train script and many others under
# state_dict, ours and torchvision's reference scripts under model; a bare state dict (torchvision's
# and timm's released weights) is one itself.
STATE_KEYS = ("state_dict", "model", "model_state_dict")
# Prefixes the weights' names may carry: DistributedDataParallel's, torch.compile's, our LandmarkRegressor's.
STATE_PREFIXES = ("module.", "_orig_mod.", "backbone.")
MIN_LOADED = 0.9   # share of the backbone's weights (by element) a weights file must supply


def load_torch_file(path: Path | str, what: str) -> object:
    """torch.load with weights_only=True; a file that is not one (text, truncated, corrupt) is a
    DataError naming it. The weights-only unpickler fails on foreign bytes in many ways (KeyError,
    IndexError, UnpicklingError, ...): any failure to read is the file's fault."""
    try:
        with warnings.catch_warnings():   # torch warns about a pickle protocol it then refuses: one line, ours
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:   # the weights-only reader stopped at what it does not allow
        held = ("Python objects other than tensors (code could run on loading)" if "global" in str(e).lower()
                else "bytes the weights-only reader does not allow (another pickle, text, or damage)")
        raise DataError(f"{path}: not a readable {what}: it holds {held}; refused, nothing in it run") from None
    except Exception as e:   # noqa: BLE001 (see above)
        detail = str(e).splitlines()[0][:100] if str(e) else ""
        raise DataError(f"{path}: not a readable {what}, truncated or corrupt ({type(e).__name__}: {detail})") from None


def read_weights(path: Path | str) -> dict[str, torch.Tensor]:
    """The state dict in a weights file (see STATE_KEYS, STATE_PREFIXES), read with weights_only=True.
    A file that is not one is a DataError saying what it holds."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: weights file not found (--weights-path)")
    obj = load_torch_file(path, "PyTorch weights file (a state dict, or a checkpoint saved with torch.save)")
    while isinstance(obj, dict) and not _is_state(obj) and (key := next((k for k in STATE_KEYS if k in obj), None)):
        obj = obj[key]
    if not isinstance(obj, dict) or not _is_state(obj):
        shown = sorted(map(str, obj))[:6] if isinstance(obj, dict) else type(obj).__name__
        raise DataError(f"{path}: holds no state dict (found {shown}); --weights-path takes a state dict, or a "
                        f"checkpoint keeping one under {', '.join(STATE_KEYS)}")
    state = {}
    for name, tensor in obj.items():
        while name.startswith(STATE_PREFIXES):
            name = name.split(".", 1)[1]
        state[name] = tensor
    return state


def _is_state(obj: dict) -> bool:
    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def load_weights(backbone: nn.Module, head: nn.Linear, path: Path | str, arch: str) -> str:
    """Load what matches (same name, same shape) from a weights file into `backbone`; the head too
    when its shape matches (our own checkpoints), else it keeps its mean-shape start. Refused, saying
    how much matched, when the file supplies less than MIN_LOADED of the backbone's weights (another
    arch, another library's names). Returns the record for config.json: file, digest, share loaded."""
    state = read_weights(path)
    own = backbone.state_dict()
    head_prefix = next(n for n, m in backbone.named_modules() if m is head)
    head_names = {f"{head_prefix}.weight", f"{head_prefix}.bias"}
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    body = [k for k in own if k not in head_names and own[k].is_floating_point()]
    total = sum(own[k].numel() for k in body)
    share = sum(own[k].numel() for k in body if k in matched) / max(1, total)
    if share < MIN_LOADED:
        missing = next(k for k in body if k not in matched)
        why = (f"{tuple(state[missing].shape)} in the file, {tuple(own[missing].shape)} in {arch}" if missing in state
               else "not in the file")
        raise DataError(f"{path}: supplies {share:.0%} of {arch}'s backbone weights ({sum(k in matched for k in body)} "
                        f"of {len(body)} tensors; first missing {missing!r}: {why}); are these weights for another "
                        f"arch? At least {MIN_LOADED:.0%} must match")
    backbone.load_state_dict(own | matched)
    head_loaded = all(n in matched for n in head_names)
    print(f"loaded {path}: {share:.1%} of {arch}'s backbone{', and the head' if head_loaded else ''} "
          f"({len(matched)} of {len(state)} tensors in the file used)")
    digest = hashlib.sha1(Path(path).read_bytes()).hexdigest()[:12]
    return f"file:{Path(path).name} sha1:{digest} backbone {share:.0%}{' head' if head_loaded else ''}"
