"""Stage 1 cost on CPU with PyTorch eager: EfficientNetV2-S frames/s at 256x256, and multi-scale
with the backbone run ONCE (64 frames, then a gather + average) vs THREE times (once per scale,
64 + 54 + 73 = 191 frames, as the reference project did).

Not a test. Frames are real decoded frames of synthetic videos. Random weights (``none``) cost
the same time as ImageNet weights only with denormal floats flushed to zero: a randomly
initialised EfficientNetV2-S has activations around 1e-6 whose products underflow into denormals,
which made the CPU about 2x slower in our measurements. The script therefore flushes denormals
(``--keep-denormals`` to see the effect); trained ImageNet weights do not produce them. Usage::

    python benchmarks/bench_extract.py [--videos 2] [--threads N] [--backbone efficientnet_v2_s]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vidcls.config import VidclsConfig
from vidcls.models.backbone import build_backbone, extract_features
from vidcls.sampling import multiscale, scale_indices
from vidcls.video import load_frames


def make_videos(count: int, root: Path) -> list[Path]:
    from vidcls.training.synth import synthesize

    paths = synthesize(root, per_class=1, seed=0, sizes=((320, 180),), frame_range=(90, 90))
    return paths[:count]


def once(backbone, frames: np.ndarray, config: VidclsConfig) -> np.ndarray:
    """Backbone on the T frames, then the scales as gathers of its output (our way)."""
    feats = extract_features(backbone, frames, config.backbone_batch).numpy()
    return multiscale(feats, config.scales)


def per_scale(backbone, frames: np.ndarray, config: VidclsConfig) -> np.ndarray:
    """The reference's way: resample the frames per scale and run the backbone on each set."""
    length = max(len(scale_indices(len(frames), s)) for s in config.scales)
    total = np.zeros((length, config.feature_dim), np.float32)
    for s in config.scales:
        rows = scale_indices(len(frames), s)
        feats = extract_features(backbone, frames[rows], config.backbone_batch).numpy()
        total[: len(rows)] += feats
    return total / len(config.scales)


def timed(fn, *args) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--backbone", default="efficientnet_v2_s")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--keep-denormals", action="store_true",
                        help="do not flush denormals (random weights then run ~2x slower than real ones)")
    args = parser.parse_args()
    torch.set_flush_denormal(not args.keep_denormals)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = VidclsConfig.for_backbone(args.backbone)
    backbone = build_backbone(config, "none")
    with tempfile.TemporaryDirectory() as tmp:
        clips = [load_frames(p, config)[0] for p in make_videos(args.videos, Path(tmp))]
    once(backbone, clips[0], config)  # warm-up: allocator and kernels for every batch shape
    t_once = t_three = 0.0
    max_diff = 0.0
    for k, frames in enumerate(clips):
        # Alternate which way goes first, so drift in machine load does not favour one of them.
        if k % 2 == 0:
            a, seq_once = timed(once, backbone, frames, config)
            b, seq_three = timed(per_scale, backbone, frames, config)
        else:
            b, seq_three = timed(per_scale, backbone, frames, config)
            a, seq_once = timed(once, backbone, frames, config)
        t_once, t_three = t_once + a, t_three + b
        max_diff = max(max_diff, float(np.abs(seq_once - seq_three).max()))
    n = len(clips)
    frames_three = sum(len(scale_indices(config.num_frames, s)) for s in config.scales)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.backbone} at {config.frame_size}x{config.frame_size}, "
          f"PyTorch eager, {n} videos, denormals {'kept' if args.keep_denormals else 'flushed'}")
    print(f"backbone once   ({config.num_frames} frames/video): {t_once / n:7.2f} s/video  "
          f"{n * config.num_frames / t_once:6.2f} frames/s")
    print(f"backbone 3x     ({frames_three} frames/video): {t_three / n:7.2f} s/video  "
          f"{n * frames_three / t_three:6.2f} frames/s")
    print(f"ratio 3x / once: {t_three / t_once:.2f}  (max |difference| of the [L, D] sequences: {max_diff:.2e})")


if __name__ == "__main__":
    main()
