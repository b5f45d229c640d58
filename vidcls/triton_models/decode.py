"""video_decode (cpu decode): decode exactly the sampled frames with PyAV, resize to S x S RGB.

VIDEO UINT8 [nbytes] + FRAME_INDICES INT32 [T] → FRAMES UINT8 [K, S, S, 3] + FRAME_MAP INT32 [T]
through :func:`vidcls.video.decode_frames`, the reference decoder training uses, so the served
pixels are the training pixels. With ``serving.dedup_frames`` FRAMES holds each distinct picture
once and FRAME_MAP the FRAMES row of each sampled position (:mod:`vidcls.dedup`); without it FRAMES
holds all T frames and FRAME_MAP is the identity. Reports packets decoded, frames sampled
and the decode mode (metrics).
"""

from __future__ import annotations

from vidcls.dedup import distinct_frames, identity_map, stack_distinct
from vidcls.triton_models import metrics
from vidcls.triton_models.base import BatchedModel, rows
from vidcls.video import decode_frames


class DecodeModel(BatchedModel):
    def setup(self) -> None:
        s = self.config.serving
        self.inputs = (s.video, s.frame_indices)
        self.output, self.map_output = s.frames, s.frame_map

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
        kept = [distinct_frames(f) if s.dedup_frames else (f, identity_map(len(f))) for f in frames]
        # One video per request is the usual case: the batch axis is added as a view, not a copy.
        distinct, mapping = stack_distinct(kept)
        return {self.output: distinct, self.map_output: mapping, metrics.STATS: samples}
