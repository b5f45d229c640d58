"""ensemble_average: every (temporal model, TTA view) softmax → PROBABILITIES [C] and CLASS_NAME [1].

Mean over views first, then over models: the order of vidcls.reference.ReferencePipeline.
"""

from __future__ import annotations

import numpy as np

from vidcls.triton_models.base import BatchedModel


class AverageModel(BatchedModel):
    def setup(self) -> None:
        self.inputs = tuple(self.config.average_inputs())
        self.names = np.array([c.encode() for c in self.config.classes], dtype=object)

    def process(self, batch):
        cfg, s = self.config, self.config.serving
        out = []
        for item in batch:
            x = np.stack([item[n] for n in self.inputs], axis=1).astype(np.float32)  # [b, M*V, C]
            p = x.reshape(len(x), cfg.num_models, len(cfg.tta_views), -1).mean(axis=2).mean(axis=1)
            out.append({s.probabilities: p, s.class_name: self.names[p.argmax(axis=-1)][:, None]})
        return out
