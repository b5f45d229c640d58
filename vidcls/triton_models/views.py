"""temporal_views: per-frame features → multi-scale sequence → one tensor per TTA view
(docs/design.md: multi-scale features, TTA views).

FEATURES FP32 [T, D] → VIEW_<NAME> FP32 [L_view, D] for each view of config.tta_views. The whole
batch is one gather + average (vidcls.sampling works on [B, T, D]).
"""

from __future__ import annotations

import numpy as np

from vidcls.sampling import multiscale, tta_views
from vidcls.triton_models.base import BatchedModel


class ViewsModel(BatchedModel):
    def setup(self) -> None:
        self.inputs = (self.config.serving.features,)

    def process(self, batch):
        feats = [item[self.inputs[0]] for item in batch]  # each [b, T, D]
        views = tta_views(multiscale(np.concatenate(feats), self.config.scales), self.config.tta_views)
        out, start = [], 0
        for f in feats:
            out.append({self.config.view_tensor(v): views[v][start:start + len(f)] for v in self.config.tta_views})
            start += len(f)
        return out
