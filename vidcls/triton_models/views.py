"""temporal_views: per-frame features → multi-scale sequence → one tensor per TTA view
(docs/design.md: multi-scale features, TTA views).

FEATURES FP32 [K, D] (+ FRAME_MAP INT32 [T]) → VIEW_<NAME> FP32 [L_view, D] for each view of
config.tta_views. FEATURES are the backbone's features of the distinct pictures the decode step
kept; FRAME_MAP gathers them back to the T sampled frames (:func:`vidcls.dedup.expand`). A
repository whose decode step hands on all T frames (DALI) declares no FRAME_MAP input: the map is
the identity there. The whole batch is one gather + average (vidcls.sampling works on [B, T, D]).
"""

from __future__ import annotations

import numpy as np

from vidcls.dedup import expand
from vidcls.sampling import multiscale, tta_views
from vidcls.triton_models.base import BatchedModel
from vidcls.video import VideoError


class ViewsModel(BatchedModel):
    def setup(self) -> None:
        s = self.config.serving
        declared = {i["name"] for i in self.model_config.get("input", [])}
        self.inputs = (s.features, s.frame_map) if s.frame_map in declared else (s.features,)

    def per_frame(self, item) -> np.ndarray:
        """This request's features of the T sampled frames, [b, T, D]."""
        s = self.config.serving
        feats = item[s.features]
        if s.frame_map not in item:
            return feats
        try:
            return expand(feats, item[s.frame_map])
        except ValueError as exc:
            raise VideoError("bad_frame_map", str(exc)) from None

    def process(self, batch):
        feats = [self.per_frame(item) for item in batch]  # each [b, T, D]
        views = tta_views(multiscale(np.concatenate(feats), self.config.scales), self.config.tta_views)
        out, start = [], 0
        for f in feats:
            out.append({self.config.view_tensor(v): views[v][start:start + len(f)] for v in self.config.tta_views})
            start += len(f)
        return out
