"""The PyTorch reference pipeline: what the served Triton ensemble must reproduce.

file → probe + sample + decode (vidcls.video) → backbone once on T frames → multi-scale →
TTA views → each temporal model at each view's own length → softmax → mean over views, then
mean over models. Parity tests compare the served PROBABILITIES with :meth:`classify`, and the
served evidence outputs with :meth:`evidence`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vidcls.config import VidclsConfig
from vidcls.models.backbone import FrameBackbone, extract_features
from vidcls.sampling import frame_attention, multiscale, sample_indices, tta_views
from vidcls.video import Source, frame_times, load_frames


@dataclass
class Evidence:
    """What one answer rests on (the served ensemble's evidence outputs, computed in PyTorch)."""

    probabilities: np.ndarray       # [C], the mean of view_probabilities over views, then models
    view_probabilities: np.ndarray  # [M, V, C] softmax per temporal model and TTA view
    frame_attention: np.ndarray     # [T] attention-pooling weight per sampled frame
    frame_times: np.ndarray         # [T] time stamp (s) of each sampled frame
    frame_indices: np.ndarray       # [T] the sampled frames (presentation order)


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
    def view_outputs(self, features: torch.Tensor) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        """[T, D] → ([models, views, C] softmax probabilities, {view: [models, L_view]} attention-pooling weights)."""
        seq = multiscale(features.to(self.device), self.config.scales)
        views = tta_views(seq, self.config.tta_views)
        probs, attention = [], {v: [] for v in self.config.tta_views}
        for m in self.models:
            row = []
            for v in self.config.tta_views:
                logits, weights = m(views[v][None], return_attention=True)
                row.append(torch.softmax(logits, dim=-1)[0])
                attention[v].append(weights[0].float().cpu().numpy())
            probs.append(torch.stack(row))
        return torch.stack(probs).float().cpu(), {v: np.stack(w) for v, w in attention.items()}

    def view_probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """[T, D] → [models, views, C] softmax probabilities."""
        return self.view_outputs(features)[0]

    @torch.inference_mode()
    def classify_frames(self, frames: np.ndarray) -> np.ndarray:
        probs = self.view_probabilities(self.features(frames))
        return probs.mean(dim=1).mean(dim=0).numpy()

    def classify(self, source: Source) -> np.ndarray:
        """An encoded video (bytes or path) → [C] class probabilities."""
        return self.evidence(source).probabilities

    def evidence(self, source: Source) -> Evidence:
        """An encoded video → its probabilities with the evidence the served ensemble returns."""
        cfg = self.config
        frames, info = load_frames(source, cfg)
        indices = sample_indices(info.num_frames, cfg.num_frames)  # the ones load_frames decoded
        probs, attention = self.view_outputs(self.features(frames))
        return Evidence(probabilities=probs.mean(dim=1).mean(dim=0).numpy(), view_probabilities=probs.numpy(),
                        frame_attention=frame_attention(attention, cfg.num_frames, cfg.scales),
                        frame_times=frame_times(info, indices), frame_indices=indices)
