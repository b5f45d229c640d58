"""INT8 backbone (opt-in): ONNX Runtime static quantization checked against FP32 features.

``vidcls export CHECKPOINTS REPO --int8-calibration VIDEOS...`` writes ``model_int8.onnx`` beside
the FP32 ``model.onnx`` of the backbone and sets ``serving.backbone_precision = "int8"`` in the
repository's config. Only the backbone is quantized: the temporal models stay FP32 and exact.

How:

- Frames: the exact frames serving feeds the backbone (:func:`vidcls.video.load_frames`: the 64
  sampled frames of each video, resized), from the user's own videos. Frames at even positions
  of each video calibrate, the odd ones check, so the check never sees a calibration frame.
- Quantization: ``quant_pre_process`` (shape inference, BatchNorm folding), then
  ``quantize_static`` in the QDQ format with per-channel int8 weights, uint8 activations and
  MinMax ranges. QDQ (QuantizeLinear/DequantizeLinear pairs around float ops) rather than
  QLinear* operators because ONNX Runtime fuses it into the same integer kernels on the CPU
  (measured the same frames/s) and TensorRT builds explicit-INT8 engines from it.
- Check (fails the export, like the FP32 parity checks): cosine similarity of every check frame's
  INT8 features with its FP32 features >= ``config.serving.int8_min_cosine``.

Measured (EfficientNetV2-S 256x256, 2 threads, AMD EPYC with AVX2 and no VNNI): 26 vs 16 frames/s
(1.6x) for the backbone. No ImageNet weights can be downloaded on the machines this was built
on, and on the weights we have the check REFUSES the graph: random init worst-frame cosine 0.967,
mean 0.981 (0.29 / 0.43 before 7-bit weights); random init with BatchNorm statistics recomputed
on video frames (features ~0.2 instead of ~1e-6, a better stand-in for trained statistics) worst
0.74, mean 0.87 (0.41 / 0.81 before 7-bit weights). EfficientNets are known to lose more than ResNets to
post-training quantization (depthwise convolutions, SiLU, squeeze-excitation). So INT8 stays
opt-in, and the check, not a promise, decides whether your weights get it.

What the check cannot tell: how much the classifier's accuracy moves on your data. The report
gives the feature agreement; evaluate the served repository on a labeled set before switching.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from vidcls.config import VidclsConfig
from vidcls.export import parity

log = logging.getLogger(__name__)

# Frames per calibration batch. The MinMax calibrator's augmented graph outputs only a ReduceMin and
# a ReduceMax per tensor, so what it keeps per batch is small; the batch bounds the activations.
# (Its CalibMaxIntermediateOutputs option is not used: in ONNX Runtime 1.32 it drops the batches
# collected so far instead of merging them.)
CALIBRATION_BATCH = 8


def calibration_frames(videos: Sequence[str | os.PathLike], config: VidclsConfig) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``videos`` like serving does → (calibration frames, check frames), uint8 [N, S, S, 3].

    Videos that do not decode are skipped with a warning; no decodable video at all is an error.
    Each set is thinned evenly to ``int8_calibration_frames`` / ``int8_check_frames`` frames.
    """
    from vidcls.video import VideoError, load_frames

    calib, check, skipped = [], [], []
    for path in videos:
        try:
            frames, _ = load_frames(path, config)
        except VideoError as exc:
            skipped.append(f"{path}: {exc}")
            continue
        calib.append(frames[0::2])
        check.append(frames[1::2])
    for line in skipped:
        log.warning("int8 calibration skips %s", line)
    if not calib:
        raise ValueError("no calibration video could be decoded" + (f" ({skipped[0]} ...)" if skipped else ""))
    s = config.serving
    return _thin(np.concatenate(calib), s.int8_calibration_frames), _thin(np.concatenate(check), s.int8_check_frames)


def _thin(frames: np.ndarray, count: int) -> np.ndarray:
    if len(frames) <= count:
        return frames
    return frames[np.linspace(0, len(frames) - 1, count).astype(int)]


class _FrameReader:
    """ONNX Runtime CalibrationDataReader over a frame array."""

    def __init__(self, input_name: str, frames: np.ndarray):
        self._batches = iter([frames[i:i + CALIBRATION_BATCH] for i in range(0, len(frames), CALIBRATION_BATCH)])
        self._name = input_name

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {self._name: batch}

    def rewind(self):  # part of ORT's reader interface; calibration reads once
        raise NotImplementedError


def quantize_graph(fp32_path: str | os.PathLike, int8_path: str | os.PathLike, config: VidclsConfig,
                   frames: np.ndarray) -> Path:
    """Statically quantize the frames graph at ``fp32_path`` (uint8 [N, S, S, 3] → [N, D]) to QDQ INT8."""
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    int8_path = Path(int8_path)
    with tempfile.TemporaryDirectory(dir=int8_path.parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre))
        quantize_static(
            str(pre), str(int8_path), _FrameReader(config.serving.frames, frames),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            # 7-bit weights: x86 CPUs without VNNI (AVX2, e.g. this project's EPYC VMs) multiply
            # u8 x s8 pairs into saturating int16 sums; with full-range weights that overflow cost
            # the feature check most of its agreement (worst-frame cosine 0.29 -> 0.967 on random
            # weights, 0.41 -> 0.74 on the BatchNorm-recomputed stand-in; module doc).
            reduce_range=True,
            # MinMax: Percentile/Entropy keep every activation of every calibration batch in
            # memory (a 128-frame EfficientNetV2-S calibration ran out of 24 GB).
            calibrate_method=CalibrationMethod.MinMax,
        )
    return int8_path


def check_int8(int8_path: str | os.PathLike, fp32_path: str | os.PathLike, config: VidclsConfig,
               frames: np.ndarray, chunk: int = 16) -> parity.ParityReport:
    """Worst-frame ``1 - cosine(INT8 features, FP32 features)`` per chunk of ``frames``, as a
    ParityReport whose tolerance is ``1 - int8_min_cosine`` (not raised); ``report.cosines`` holds
    every frame's cosine."""
    from vidcls.ort import make_session

    threads = parity.parity_threads()
    fp32 = make_session(fp32_path, intra_op_threads=threads, log_severity=4)
    int8 = make_session(int8_path, intra_op_threads=threads, log_severity=4)
    name = config.serving.frames
    report = parity.ParityReport(f"backbone int8 ({int8_path})", "1 - cos(feat_int8, feat_fp32), worst frame",
                                 1.0 - float(config.serving.int8_min_cosine))
    report.cosines = []
    for i in range(0, len(frames), chunk):
        x = frames[i:i + chunk]
        ref = fp32.run(None, {name: x})[0].astype(np.float64)
        try:
            got = int8.run(None, {name: x})[0].astype(np.float64)
        except Exception as exc:
            report.rows.append(parity.ParityRow(x.shape, float("nan"), float("inf"), f"ONNX Runtime failed: {exc}"[:300]))
            continue
        cos = (ref * got).sum(1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1), 1e-30)
        report.cosines.extend(float(c) for c in cos)
        error = float(1.0 - cos.min()) if np.all(np.isfinite(cos)) else float("inf")
        rel = float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))
        report.rows.append(parity.ParityRow(x.shape, float(np.abs(got - ref).max()), error,
                                            f"mean cos {cos.mean():.5f}, max diff / max |fp32| {rel:.3g}"))
    return report


def feature_summary(report: parity.ParityReport, config: VidclsConfig) -> dict:
    """The numbers of a :func:`check_int8` report that the export's report and the benchmark record."""
    return {"worst_cosine": 1.0 - report.worst, "mean_cosine": float(np.mean(report.cosines)),
            "check_frames": len(report.cosines), "min_cosine_required": float(config.serving.int8_min_cosine)}


def quantize_backbone(fp32_path: str | os.PathLike, int8_path: str | os.PathLike, config: VidclsConfig,
                      videos: Iterable[str | os.PathLike], check: bool = True,
                      reports: list | None = None) -> Path:
    """Calibrate on ``videos``, quantize, check; on a failed check nothing is written at ``int8_path``
    and :class:`~vidcls.export.parity.ParityError` is raised. ``check=False`` is for speed
    measurements only (benchmarks on random weights, where the check is not meaningful). The
    check's ParityReport is appended to ``reports`` when given."""
    videos = list(videos)
    log.info("int8 calibration: decoding %d video(s)", len(videos))
    calib, check_frames = calibration_frames(videos, config)
    log.info("int8 calibration: %d frames, check: %d frames, from %d videos", len(calib), len(check_frames), len(videos))

    def check_fn(tmp):
        report = check_int8(tmp, fp32_path, config, check_frames)
        if reports is not None:
            reports.append(report)
        return report

    return parity.write_checked(Path(int8_path), lambda tmp: quantize_graph(fp32_path, tmp, config, calib),
                                check_fn if check else None)


def prediction_agreement(fp32_path: str | os.PathLike, int8_path: str | os.PathLike, config: VidclsConfig,
                         models: list, videos: Iterable[str | os.PathLike]) -> dict:
    """The ensemble's probabilities per video with FP32 vs INT8 backbone features (the rest of the
    pipeline as the PyTorch reference runs it): how often the top-1 class agrees and the largest
    probability difference. Videos that do not decode are left out."""
    import torch

    from vidcls.ort import make_session
    from vidcls.reference import ReferencePipeline
    from vidcls.ort import chunked_run
    from vidcls.video import VideoError, load_frames

    threads = parity.parity_threads()
    sessions = {name: make_session(path, intra_op_threads=threads, log_severity=4)
                for name, path in (("fp32", fp32_path), ("int8", int8_path))}
    head = ReferencePipeline(config, backbone=None, models=models)
    rows = []
    for path in videos:
        try:
            frames, _ = load_frames(path, config)
        except VideoError:
            continue
        probs = {}
        for name, session in sessions.items():
            feats = chunked_run(session, config.serving.frames, frames, config.backbone_batch)
            probs[name] = head.view_probabilities(torch.from_numpy(feats)).mean(dim=1).mean(dim=0).numpy()
        rows.append({"video": str(path), "fp32": probs["fp32"].tolist(), "int8": probs["int8"].tolist(),
                     "top1_agrees": bool(probs["fp32"].argmax() == probs["int8"].argmax()),
                     "max_abs_diff": float(np.abs(probs["fp32"] - probs["int8"]).max())})
    return {"videos": len(rows), "top1_agree": sum(r["top1_agrees"] for r in rows),
            "max_abs_prob_diff": max((r["max_abs_diff"] for r in rows), default=None), "rows": rows}
