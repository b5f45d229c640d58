"""The PyTorch reference pipeline: what the served Triton ensemble must reproduce.

file → probe + sample + decode (vidcls.video) → backbone once on T frames → multi-scale →
TTA views → each temporal model at each view's own length → softmax → mean over views, then
mean over models. Parity tests compare the served PROBABILITIES with :meth:`classify`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vidcls.config import VidclsConfig
from vidcls.models.backbone import FrameBackbone, extract_features
from vidcls.sampling import multiscale, tta_views
from vidcls.video import Source, load_frames


@dataclass
class ReferencePipeline:
    config: VidclsConfig
    backbone: FrameBackbone
    models: list  # SuperEnhancedTemporalModel, eval mode
    device: str = "cpu"

    @classmethod
    def from_checkpoints(cls, paths, device: str = "cpu", backbone_weights: str | None = None) -> "ReferencePipeline":
        from vidcls.checkpoint import load_ensemble
        from vidcls.models.backbone import build_backbone

        models, config, metas = load_ensemble(paths, device)
        weights = backbone_weights or metas[0].get("backbone_weights", "none")
        backbone = build_backbone(config, weights).to(device)
        return cls(config, backbone, models, device)

    @torch.inference_mode()
    def features(self, frames: np.ndarray) -> torch.Tensor:
        """[T, H, W, 3] uint8 → [T, D] per-frame features (backbone run once)."""
        return extract_features(self.backbone, frames, self.config.backbone_batch, self.device)

    @torch.inference_mode()
    def view_probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """[T, D] → [models, views, C] softmax probabilities."""
        seq = multiscale(features.to(self.device), self.config.scales)
        views = tta_views(seq, self.config.tta_views)
        out = torch.stack([
            torch.stack([torch.softmax(m(views[v][None]), dim=-1)[0] for v in self.config.tta_views])
            for m in self.models])
        return out.float().cpu()

    @torch.inference_mode()
    def classify_frames(self, frames: np.ndarray) -> np.ndarray:
        probs = self.view_probabilities(self.features(frames))
        return probs.mean(dim=1).mean(dim=0).numpy()

    def classify(self, source: Source) -> np.ndarray:
        """An encoded video (bytes or path) → [C] class probabilities."""
        frames, _ = load_frames(source, self.config)
        return self.classify_frames(frames)
