"""ensemble_average: every (temporal model, TTA view) softmax → PROBABILITIES [C] and CLASS_NAME [1].

Mean over views first, then over models: the order of vidcls.reference.ReferencePipeline. With
evidence on (``config.serving.evidence``) it also returns what the answer rests on:
VIEW_PROBABILITIES [M, V, C], the array whose mean over views, then models, is PROBABILITIES
(computed from it, so it reproduces PROBABILITIES exactly), and FRAME_ATTENTION [T], each temporal
model's attention-pooling weights over its view's rows mapped back to the T sampled frames
(vidcls.sampling.frame_attention) and averaged over views, then models.
"""

from __future__ import annotations

import numpy as np

from vidcls.sampling import frame_attention
from vidcls.triton_models import metrics
from vidcls.triton_models.base import BatchedModel


class AverageModel(BatchedModel):
    def setup(self) -> None:
        s = self.config.serving
        self.prob_inputs = tuple(self.config.average_inputs())
        self.attention_inputs = tuple(self.config.average_inputs(s.attention)) if s.evidence else ()
        self.inputs = self.prob_inputs + self.attention_inputs
        self.names = np.array([c.encode() for c in self.config.classes], dtype=object)

    def process(self, batch):
        cfg, s = self.config, self.config.serving
        m, v = cfg.num_models, len(cfg.tta_views)
        out = []
        for item in batch:
            x = np.stack([item[n] for n in self.prob_inputs], axis=1).astype(np.float32)  # [b, M*V, C]
            per_view = x.reshape(len(x), m, v, -1)
            p = per_view.mean(axis=2).mean(axis=1)
            names = self.names[p.argmax(axis=-1)]
            result = {s.probabilities: p, s.class_name: names[:, None],
                      metrics.STATS: [metrics.sample(metrics.PREDICTIONS, **{"class": n.decode()}) for n in names]}
            if s.evidence:
                result[s.view_probabilities] = per_view
                result[s.frame_attention] = self.frame_attention(item)
            out.append(result)
        return out

    def frame_attention(self, item) -> np.ndarray:
        """[b, T]: the attention weights of every (model, view) mapped to the sampled frames."""
        cfg = self.config
        grid = np.array(self.attention_inputs, dtype=object).reshape(cfg.num_models, -1)  # like input_names()
        views = {view: np.stack([item[n] for n in grid[:, j]], axis=1)  # [b, M, L_view]
                 for j, view in enumerate(cfg.tta_views)}
        return frame_attention(views, cfg.num_frames, cfg.scales)
