"""cpu target: the backbone and the temporal models as python models running ONNX Runtime.

Triton's onnxruntime backend is not in the nvidia-pytriton wheel, so on CPU the exported ONNX
graphs run here, in the python backend, with the sessions of :mod:`vidcls.ort`. Each execute()
runs the whole batch of requests through as few ONNX Runtime calls as possible.
"""

from __future__ import annotations

import numpy as np

from vidcls.ort import chunked_run, session_threads
from vidcls.triton_models.base import BatchedModel

MODEL_FILE = "model.onnx"


def instance_count(model_config: dict) -> int:
    """Instances of this model in its Triton config (instance_group counts summed)."""
    return sum(int(g.get("count", 1)) for g in model_config.get("instance_group", [])) or 1


class _OnnxModel(BatchedModel):
    role = ""

    def model_file(self) -> str:
        return MODEL_FILE

    def setup(self) -> None:
        from vidcls.ort import make_session

        threads = session_threads(self.config, self.role, instance_count(self.model_config))
        self.session = make_session(self.version_dir / self.model_file(), intra_op_threads=threads,
                                    spinning=self.config.serving.ort_spinning)
        self.session_input = self.session.get_inputs()[0].name


class BackboneModel(_OnnxModel):
    """FRAMES UINT8 [K, S, S, 3] → FEATURES FP32 [K, D]: every request's frames in one chunked run
    (K: the distinct pictures of the video, at most T; requests with different K batch together)."""

    role = "backbone"

    def model_file(self) -> str:
        return self.config.backbone_onnx_file  # model_int8.onnx with backbone_precision int8

    def setup(self) -> None:
        super().setup()
        s = self.config.serving
        self.inputs, self.output = (s.frames,), s.features

    def process(self, batch):
        frames = [item[self.inputs[0]] for item in batch]  # each [b, T, S, S, 3]
        flat = [f.reshape(-1, *f.shape[2:]) for f in frames]
        # One request (the usual case below saturation): a view of its frames, no 12.6 MB copy.
        flat = flat[0] if len(flat) == 1 else np.concatenate(flat)
        # config.backbone_batch frames per run, as in extraction: bounded activation memory.
        features = chunked_run(self.session, self.session_input, flat, self.config.backbone_batch)
        out, start = [], 0
        for f in frames:
            n = f.shape[0] * f.shape[1]
            out.append({self.output: features[start:start + n].reshape(f.shape[0], f.shape[1], -1)})
            start += n
        return out


class TemporalModel(_OnnxModel):
    """SEQUENCE FP32 [L, D] → PROBS FP32 [C] (+ ATTENTION FP32 [L], the attention-pooling weights,
    with evidence on); requests of equal length run as one batch."""

    role = "temporal"

    def setup(self) -> None:
        super().setup()
        s = self.config.serving
        self.inputs = (s.sequence,)
        self.outputs = (s.probs, s.attention) if s.evidence else (s.probs,)

    def process(self, batch):
        name = self.inputs[0]
        by_length: dict[int, list[int]] = {}
        for i, item in enumerate(batch):
            by_length.setdefault(item[name].shape[1], []).append(i)
        out: list = [None] * len(batch)
        for indices in by_length.values():
            seqs = [batch[i][name] for i in indices]  # each [b, L, D]
            results = chunked_run(self.session, self.session_input, np.concatenate(seqs),
                                  self.config.serving.temporal_batch, outputs=self.outputs)
            start = 0
            for i, seq in zip(indices, seqs):
                out[i] = {n: r[start:start + len(seq)] for n, r in zip(self.outputs, results)}
                start += len(seq)
        return out
