"""Decode of the 64 sampled frames: seeking GOP by GOP vs one pass from the start, same files, one run.

    .venv/bin/python benchmarks/bench_decode.py            # ~1 min on 2 cores (+ ~3 min the first time: it encodes the clips)
    .venv/bin/python benchmarks/bench_decode.py --smoke    # small clips, 16 samples: the script runs (make test)

For each clip (generated once into ``--work``, real H.264/VP9 encodes of textured moving content)
it times :func:`vidcls.video.load_frames` as serving and extraction call it (probe + decode, seeking
allowed) against the same with ``seek=False``, checks that both give identical pixels, and prints
the packets each decoded and the speed-up. Short clips and single-GOP files must show no loss
(they take the pass from the start; the only extra cost is the demux pass that decides).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from vidcls.config import VidclsConfig
from vidcls.sampling import sample_indices
from vidcls.video import decode_frames, probe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import VP9_FAST, encode_once, panning_frames, smoke_config, work_dir

# name, frames, size, codec, encoder options: a short clip (as in the tests and bench_pipeline)
# and long files (6 min at 25 fps; 3 min for VP9) with a 2 s GOP (streaming/camera style) and with
# x264's default GOP (keyint 250). Seeking pays when the 64 samples are several GOPs apart.
CLIPS = [
    ("short_h264_300f.mp4", 300, (320, 240), "libx264", None),
    ("long_h264_gop50_9000f.mp4", 9000, (480, 270), "libx264", {"g": "50"}),
    ("long_h264_gop250_9000f.mp4", 9000, (480, 270), "libx264", None),
    ("long_vp9_gop50_4500f.webm", 4500, (320, 180), "libvpx-vp9", {"g": "50", **VP9_FAST}),
]
# --smoke: a short clip and two whose 16 samples (the tiny config's) are 2.5 GOPs apart, so both
# paths run (seeking, the pass from the start) in a few seconds.
SMOKE_CLIPS = [
    ("short_h264_60f.mp4", 60, (160, 120), "libx264", None),
    ("h264_gop10_400f.mp4", 400, (160, 120), "libx264", {"g": "10"}),
    ("vp9_gop10_400f.webm", 400, (160, 120), "libvpx-vp9", {"g": "10", **VP9_FAST}),
]


def decode_once(path: Path, config: VidclsConfig, seek: bool) -> tuple[float, dict, np.ndarray]:
    stats: dict = {}
    t0 = time.perf_counter()
    info = probe(path, config.limits)
    frames = decode_frames(path, sample_indices(info.num_frames, config.num_frames), config.frame_size,
                           info.num_frames, config.limits.max_missing_fraction, config.limits,
                           seek=seek, stats=stats)
    return time.perf_counter() - t0, stats, frames


def compare(path: Path, config: VidclsConfig, reps: int):
    """Median seconds with and without seeking, alternating (so drifting machine load hits both)."""
    decode_once(path, config, True)  # page cache, lazy imports
    times = {True: [], False: []}
    results = {}
    for _ in range(reps):
        for seek in (True, False):
            t, stats, frames = decode_once(path, config, seek)
            times[seek].append(t)
            results[seek] = (stats, frames)
    return statistics.median(times[True]), statistics.median(times[False]), results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=None, help="the clips (default runs/bench_decode, runs/bench_decode_smoke "
                                                    "with --smoke)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--smoke", action="store_true",
                        help="small clips, the tiny config's 16 samples, one repetition: checks that the script runs")
    args = parser.parse_args(argv)
    config = smoke_config() if args.smoke else VidclsConfig()
    reps = 1 if args.smoke else args.reps
    work = work_dir(args.work, "bench_decode", args.smoke)
    work.mkdir(parents=True, exist_ok=True)
    print(f"{'clip':<30} {'frames':>6} {'mode':>10} {'packets':>8} {'seek s':>8} {'start s':>8} {'speed-up':>8}")
    for name, n, size, codec, options in SMOKE_CLIPS if args.smoke else CLIPS:
        path = encode_once(work / name, panning_frames(n, size), codec, options)
        t_seek, t_seq, results = compare(path, config, reps)
        (st_seek, f_seek), (st_seq, f_seq) = results[True], results[False]
        if not np.array_equal(f_seek, f_seq):
            print(f"{name}: FRAMES DIFFER between seeking and the pass from the start")
            return 1
        print(f"{name:<30} {n:>6} {st_seek['mode']:>10} {st_seek.get('packets', 0):>4}/{st_seq.get('packets', 0):<4}"
              f" {t_seek:>8.3f} {t_seq:>8.3f} {t_seq / t_seek:>7.2f}x", flush=True)
    print("identical frames in every case; 'packets' = sent to the decoder with / without seeking")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
