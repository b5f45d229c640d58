"""video_probe: validate each video against the input limits, count its frames, pick the frame indices.

VIDEO UINT8 [nbytes] (the encoded file) → FRAME_INDICES INT32 [T] = sample_indices(frames, T), the
same function training and the reference decoder use. Nothing is decoded here: a request that
breaks a limit is rejected before any decoder allocates memory for it.
"""

from __future__ import annotations

import numpy as np

from vidcls.sampling import sample_indices
from vidcls.triton_models.base import BatchedModel, rows
from vidcls.video import probe


class ProbeModel(BatchedModel):
    def setup(self) -> None:
        s = self.config.serving
        self.inputs = (s.video,)
        self.output = s.frame_indices

    def process(self, batch):
        video = self.config.serving.video
        return [self.one(item[video]) for item in batch]

    def one(self, videos: np.ndarray):
        try:
            out = [sample_indices(probe(v, self.config.limits).num_frames, self.config.num_frames)
                   for v in rows(videos)]
        except Exception as exc:  # this request's error, not the batch's
            return exc
        return {self.output: np.stack(out).astype(np.int32)}
