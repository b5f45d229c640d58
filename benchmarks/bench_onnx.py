"""ONNX Runtime vs PyTorch eager on the CPU, same thread count, production-size models (random weights).

    .venv/bin/python benchmarks/bench_onnx.py [--threads 2] [--repeats 5] [--frames 8]
    .venv/bin/python benchmarks/bench_onnx.py --smoke    # the tiny test models, once: the script runs (make test)

Prints ms per sequence for the temporal model (65M parameters) at L=73, batch 1 and 8, and frames/s
of the EfficientNetV2-S backbone at 256x256. A quick measurement, not a test: these machines are
shared, so compare the two columns of one run, not runs with each other.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vidcls.config import VidclsConfig
from vidcls.export.onnx_export import export_backbone_onnx, export_temporal_onnx
from vidcls.models.backbone import build_backbone
from vidcls.models.temporal import SoftmaxHead, SuperEnhancedTemporalModel
from vidcls.ort import make_session


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: allocations, ORT's first-run shape planning, oneDNN primitive caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _torch_and_ort_seconds(module, session, input_name: str, x: np.ndarray, repeats: int) -> tuple[float, float]:
    """Median seconds of ``module`` (PyTorch eager, inference mode) and ``session`` on the same input."""
    xt = torch.from_numpy(x)

    def run_torch():
        with torch.inference_mode():
            module(xt)

    return (_median_seconds(run_torch, repeats),
            _median_seconds(lambda: session.run(None, {input_name: x}), repeats))


def bench_temporal(config: VidclsConfig, tmp: Path, threads: int, repeats: int, batches=(1, 8)) -> list[dict]:
    torch.manual_seed(0)
    model = SuperEnhancedTemporalModel(config.temporal).eval()
    head = SoftmaxHead(model).eval()
    path = export_temporal_onnx(model, config, tmp / "temporal.onnx", check=False)
    session = make_session(path, intra_op_threads=threads)
    rows = []
    for b in batches:
        x = np.abs(np.random.default_rng(0).standard_normal((b, config.seq_len, config.feature_dim))).astype(np.float32)
        t_torch, t_ort = _torch_and_ort_seconds(head, session, config.serving.sequence, x, repeats)
        rows.append({"what": f"temporal L={config.seq_len} batch {b}", "torch_ms_per_seq": 1e3 * t_torch / b,
                     "ort_ms_per_seq": 1e3 * t_ort / b, "speedup": t_torch / t_ort})
    return rows


def bench_backbone(config: VidclsConfig, tmp: Path, threads: int, repeats: int, frames: int) -> dict:
    backbone = build_backbone(config, "none")
    path = export_backbone_onnx(backbone, config, tmp / "backbone.onnx", check=False)
    session = make_session(path, intra_op_threads=threads)
    s = config.frame_size
    x = np.random.default_rng(0).integers(0, 256, (frames, s, s, 3), dtype=np.uint8)
    t_torch, t_ort = _torch_and_ort_seconds(backbone, session, config.serving.frames, x, repeats)
    return {"what": f"{config.backbone} {s}x{s}, {frames} frames per call", "torch_frames_per_s": frames / t_torch,
            "ort_frames_per_s": frames / t_ort, "speedup": t_torch / t_ort}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--frames", type=int, default=8, help="frames per backbone call")
    parser.add_argument("--smoke", action="store_true",
                        help="the tiny test models (VidclsConfig.tiny), one repetition: checks that the script runs")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = VidclsConfig.tiny() if args.smoke else VidclsConfig()
    if args.smoke:
        args.repeats, args.frames = 1, 2
    print(f"torch {torch.__version__}, {args.threads} threads (torch and ONNX Runtime), median of {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        for row in bench_temporal(config, Path(tmp), args.threads, args.repeats):
            print(f"{row['what']:<40} torch {row['torch_ms_per_seq']:8.1f} ms/seq   "
                  f"ORT {row['ort_ms_per_seq']:8.1f} ms/seq   x{row['speedup']:.2f}")
        row = bench_backbone(config, Path(tmp), args.threads, args.repeats, args.frames)
        print(f"{row['what']:<40} torch {row['torch_frames_per_s']:8.1f} frames/s "
              f"ORT {row['ort_frames_per_s']:8.1f} frames/s x{row['speedup']:.2f}")


if __name__ == "__main__":
    main()
