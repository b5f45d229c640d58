"""video_probe: validate each video against the input limits, count its frames, pick the frame indices.

VIDEO UINT8 [nbytes] (the encoded file) → FRAME_INDICES INT32 [T] = sample_indices(frames, T), the
same function training and the reference decoder use. Nothing is decoded here: a request that
breaks a limit is rejected before any decoder allocates memory for it.
"""

from __future__ import annotations

import numpy as np

from vidcls.config import DECODER_PARAMETER
from vidcls.sampling import sample_indices
from vidcls.triton_models.base import BatchedModel, rows
from vidcls.video import VideoError, probe


class ProbeModel(BatchedModel):
    def setup(self) -> None:
        s = self.config.serving
        self.inputs = (s.video,)
        self.output = s.frame_indices
        params = self.model_config.get("parameters", {})
        self.decoder = params.get(DECODER_PARAMETER, {}).get("string_value", "cpu")

    def check_decoder(self, info) -> None:
        """A --decode dali repository: refuse what the DALI path cannot read, before DALI sees it
        (the DALI backend fails the whole batch on one bad sample; serving.dali_codecs)."""
        if self.decoder != "dali":
            return
        s = self.config.serving
        if info.codec not in s.dali_codecs:
            raise VideoError("dali_unsupported", f"codec {info.codec!r} is not decoded by this GPU repository "
                             f"(DALI/NVDEC: {', '.join(s.dali_codecs)}); send it to a --decode cpu deployment")
        if not set(info.container.split(",")) & set(s.dali_containers):
            raise VideoError("dali_unsupported", f"container {info.container!r} is not read by this GPU repository "
                             f"(DALI: {', '.join(s.dali_containers)}); send it to a --decode cpu deployment")

    def process(self, batch):
        video = self.config.serving.video
        return [self.one(item[video]) for item in batch]

    def one(self, videos: np.ndarray):
        try:
            out = []
            for v in rows(videos):
                info = probe(v, self.config.limits)
                self.check_decoder(info)
                out.append(sample_indices(info.num_frames, self.config.num_frames))
        except Exception as exc:  # this request's error, not the batch's
            return exc
        return {self.output: np.stack(out).astype(np.int32)}
