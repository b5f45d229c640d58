"""video_decode (cpu decode): decode exactly the sampled frames with PyAV, resize to S x S RGB.

VIDEO UINT8 [nbytes] + FRAME_INDICES INT32 [T] → FRAMES UINT8 [T, S, S, 3] through
:func:`vidcls.video.decode_frames`, the reference decoder training uses, so the served pixels are
the training pixels. Reports packets decoded, frames sampled and the decode mode (metrics).
"""

from __future__ import annotations

import numpy as np

from vidcls.triton_models import metrics
from vidcls.triton_models.base import BatchedModel, rows
from vidcls.video import decode_frames


class DecodeModel(BatchedModel):
    def setup(self) -> None:
        s = self.config.serving
        self.inputs = (s.video, s.frame_indices)
        self.output = s.frames

    def process(self, batch):
        return [self.one(item) for item in batch]

    def one(self, item):
        s, cfg = self.config.serving, self.config
        frames, samples = [], []
        try:
            for video, indices in zip(rows(item[s.video]), rows(item[s.frame_indices])):
                stats: dict = {}
                frames.append(decode_frames(video, indices, cfg.frame_size, num_frames=int(indices.max()) + 1,
                                            max_missing_fraction=cfg.limits.max_missing_fraction,
                                            limits=cfg.limits,  # the decoder's picture-size bound
                                            stats=stats))
                samples += [metrics.sample(metrics.DECODED_PACKETS, stats.get("packets", 0)),
                            metrics.sample(metrics.SAMPLED_FRAMES, len(indices)),
                            metrics.sample(metrics.DECODES, mode=stats["mode"])]
        except Exception as exc:  # this request's error, not the batch's
            return exc
        # One video per request is the usual case: add the batch axis as a view, not a copy.
        return {self.output: frames[0][None] if len(frames) == 1 else np.stack(frames), metrics.STATS: samples}
