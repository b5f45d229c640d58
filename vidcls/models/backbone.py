"""Frozen frame backbones: uint8 RGB frames [N, H, W, 3] in, feature vectors [N, D] out.

Preprocessing (/255, ImageNet mean/std, NHWC→NCHW) is part of the module, so the exported ONNX
graph / TensorRT engine takes the decoder's uint8 frames directly and nothing between decode and
backbone copies or converts them.

Which network, which weights and which head: the backbone's record (:mod:`vidcls.backbones`).
Weights: ``imagenet`` (torchvision's, needs them in the torch hub cache: nothing is downloaded on
these machines), a local file (a state_dict saved with torch.save or safetensors) or ``none``
(random init from a fixed seed, deterministic, for tests and offline use).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from vidcls.backbones import BACKBONES, BackboneSpec
from vidcls.config import EXTERNAL_BACKBONE, VidclsConfig
from vidcls.errors import VidclsError


class TinyCNN(nn.Module):
    """A small CNN (4 strided convs, ~0.06 GFLOP per 256x256 frame) for tests and the demo.

    Random-init features of a conv stack still separate colour, edge and texture statistics,
    which is what the synthetic classes differ in; average + max pooling keeps both the mean
    look and the strongest local responses (text, outlines, HUD).
    """

    def __init__(self, channels: Sequence[int] = BACKBONES["tiny"].stages):
        super().__init__()
        chans = [3, *channels]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.ReLU()]
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)


def build_cnn(spec: BackboneSpec, imagenet: bool) -> nn.Module:
    """The network ``spec`` names, its head replaced by identity, with its pretrained weights
    (``imagenet``) or randomly initialised."""
    module, attr = spec.builder.rsplit(".", 1)
    module = importlib.import_module(module)
    if not spec.pretrained:
        if imagenet:
            raise ValueError(f"the {spec.name} backbone has no ImageNet weights; use 'none' or a file")
        return getattr(module, attr)()
    weights = getattr(getattr(module, spec.weights_enum), spec.weights_version) if imagenet else None
    try:
        model = getattr(module, attr)(weights=weights)
    except OSError as exc:  # the download (urllib's URLError is an OSError); cached weights need none
        raise VidclsError(f"could not get the ImageNet weights of {spec.name} ({getattr(exc, 'reason', exc)}): "
                          "on a machine without internet access pass --weights FILE (a state dict you "
                          "have), or --weights none (random; for tests)") from None
    setattr(model, spec.head, nn.Identity())
    return model


class FrameBackbone(nn.Module):
    """Normalization + CNN, frozen, eval mode. uint8 [N, H, W, 3] → float32 [N, D]."""

    def __init__(self, cnn: nn.Module, mean, std):
        super().__init__()
        self.cnn = cnn
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FrameBackbone":
        return super().train(False)  # frozen: BatchNorm statistics and dropout never change

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        # Cast before anything else: in the exported graph the uint8 frames then feed only a Cast,
        # the one place TensorRT's ONNX parser takes UINT8 (vidcls.export.backend_contract).
        x = frames.to(torch.float32).permute(0, 3, 1, 2) / 255.0
        x = (x - self.mean) / self.std
        return self.cnn(x)


class BackboneUnavailable(ValueError):
    """The config's features come from files (``EXTERNAL_BACKBONE``): no network computes them."""


def require_runnable(config: VidclsConfig) -> None:
    """Raise :class:`BackboneUnavailable` unless vidcls can compute ``config``'s features from video."""
    if config.backbone == EXTERNAL_BACKBONE:
        raise BackboneUnavailable(
            f"these {config.feature_dim}-d features came from files made outside vidcls (backbone "
            f"{EXTERNAL_BACKBONE!r}): training and evaluation on feature files work, but extraction and "
            f"export need a backbone vidcls can run ({', '.join(sorted(BACKBONES))})")


def build_backbone(config: VidclsConfig, weights: str = "none", seed: int = 0) -> FrameBackbone:
    """The backbone of ``config``; ``weights`` is 'imagenet', 'none' or a path to a state dict."""
    require_runnable(config)
    spec = BACKBONES.get(config.backbone)
    if spec is None:
        raise ValueError(f"unknown backbone {config.backbone!r}")
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # 'none' is random but reproducible: extraction and export agree
    try:
        cnn = build_cnn(spec, imagenet=(weights == "imagenet"))
    finally:
        torch.random.set_rng_state(gen_state)
    if weights not in ("none", "imagenet"):
        cnn.load_state_dict(_load_state_dict(Path(weights)))
    return FrameBackbone(cnn, config.mean, config.std)


# Parameter name prefixes of the classification heads (the records' ``head``).
_HEADS = tuple(sorted({f"{spec.head}." for spec in BACKBONES.values() if spec.head}))


def _load_state_dict(path: Path) -> dict:
    if not path.exists():
        raise VidclsError(f"backbone weights file {path} not found (--weights takes imagenet, none or a file)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:  # weights_only: a state dict of tensors, never arbitrary pickled objects
        state = torch.load(path, map_location="cpu", weights_only=True)
    # The classification head was replaced by identity; a full torchvision state dict still loads.
    return {k: v for k, v in state.items() if not k.startswith(_HEADS)}


@torch.inference_mode()
def extract_features(backbone: FrameBackbone, frames, batch: int, device: str = "cpu") -> torch.Tensor:
    """Run the backbone over [T, H, W, 3] uint8 frames in chunks of ``batch`` → float32 [T, D] on CPU."""
    frames = torch.as_tensor(frames)
    outs = [backbone(frames[i:i + batch].to(device)).float().cpu() for i in range(0, len(frames), batch)]
    return torch.cat(outs)
