"""video_probe: validate each video against the input limits, count its frames, pick the frame indices.

VIDEO UINT8 [nbytes] (the encoded file) → FRAME_INDICES INT32 [T] = sample_indices(frames, T), the
same function training and the reference decoder use, and (evidence) FRAME_NUMBERS INT32 [T] (the
same indices, for the client) and FRAME_TIMES FP32 [T], the time stamp of each sampled frame. Nothing is decoded here: a request that breaks a limit is
rejected before any decoder allocates memory for it.
"""

from __future__ import annotations

import numpy as np

from vidcls import nvdec
from vidcls.config import DECODER_PARAMETER
from vidcls.sampling import sample_indices
from vidcls.triton_models import metrics
from vidcls.triton_models.base import BatchedModel, rows
from vidcls.video import VideoError, frame_times, probe


class ProbeModel(BatchedModel):
    def setup(self) -> None:
        s = self.config.serving
        self.inputs = (s.video,)
        self.output = s.frame_indices
        params = self.model_config.get("parameters", {})
        self.decoder = params.get(DECODER_PARAMETER, {}).get("string_value", "cpu")

    def check_decoder(self, info) -> None:
        """A --decode dali repository: refuse what the DALI path cannot read, before DALI sees it
        (the DALI backend fails the whole batch on one bad sample; serving.dali_codecs, and what the
        NVDEC of serving.target_gpu decodes: vidcls.nvdec)."""
        if self.decoder != "dali":
            return
        s = self.config.serving
        cpu = "; a --decode cpu deployment (PyAV) takes it"
        if info.codec not in s.dali_codecs:
            raise VideoError("dali_unsupported", f"codec {info.codec!r} is not decoded by this GPU repository "
                             f"(DALI/NVDEC: {', '.join(s.dali_codecs)})" + cpu)
        if not set(info.container.split(",")) & set(s.dali_containers):
            raise VideoError("dali_unsupported", f"container {info.container!r} is not read by this GPU repository "
                             f"(DALI: {', '.join(s.dali_containers)})" + cpu)
        why = nvdec.refusal(s.target_gpu, info.codec, info.bit_depth, info.chroma, info.profile)
        if why:
            raise VideoError("dali_unsupported", why + cpu)

    def process(self, batch):
        video = self.config.serving.video
        return [self.one(item[video]) for item in batch]

    def one(self, videos: np.ndarray):
        s = self.config.serving
        indices, times, stats = [], [], []
        try:
            for v in rows(videos):
                info = probe(v, self.config.limits)
                self.check_decoder(info)
                idx = sample_indices(info.num_frames, self.config.num_frames)
                indices.append(idx)
                times.append(frame_times(info, idx))
                stats += [metrics.sample(metrics.INPUT_DURATION, info.duration_s),
                          metrics.sample(metrics.INPUT_SHORT_SIDE, min(info.width, info.height))]
        except Exception as exc:  # this request's error, not the batch's
            return exc
        out = {self.output: np.stack(indices).astype(np.int32), metrics.STATS: stats}
        if s.evidence:
            out[s.frame_numbers] = out[self.output]
            out[s.frame_times] = np.stack(times)
        return out
