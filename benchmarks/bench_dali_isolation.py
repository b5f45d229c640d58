"""Cost of the DALI decode step's per-request isolation, measured with CPU DALI on VP9 clips.

The DALI backend fails every request of a batch when one sample fails, so the gpu repository
decodes one video per execution (``serving.dali_decode_batch = 1``) in ``serving.dali_instances``
instances. This script decodes the same videos (the sampled frames of each, resized, exactly the
served pipeline) three ways in one run and prints videos/s and the ratios:

- batched: one pipeline, batches of ``--batch`` videos (what a batching DALI model would do);
- isolated: one pipeline of batch 1, videos one after another (one instance);
- isolated x N: N pipelines of batch 1 run from N threads (N instances side by side).

Usage: python benchmarks/bench_dali_isolation.py [--videos 16] [--batch 8] [--instances 4]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from vidcls.config import VidclsConfig
from vidcls.export.dali_pipeline import build_pipeline, run_pipeline
from vidcls.sampling import sample_indices
from vidcls.video import encode_video, probe


def clips(folder: Path, count: int) -> list[tuple[bytes, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        base = rng.integers(0, 256, (180, 320, 3), dtype=np.uint8)
        frames = [np.roll(base, 4 * k, axis=1) for k in range(90)]
        path = encode_video(folder / f"c{i}.webm", frames, codec="libvpx-vp9", options={"deadline": "realtime", "cpu-used": "8"})
        out.append((path.read_bytes(), sample_indices(probe(path).num_frames, VidclsConfig().num_frames)))
    return out


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--instances", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2, help="DALI threads per pipeline")
    args = ap.parse_args()
    config = VidclsConfig()
    with tempfile.TemporaryDirectory() as tmp:
        videos = clips(Path(tmp), args.videos)
    batched = build_pipeline(config, "cpu", batch_size=args.batch, num_threads=args.threads)
    singles = [build_pipeline(config, "cpu", batch_size=1, num_threads=args.threads) for _ in range(args.instances)]
    run_pipeline(batched, config, [v for v, _ in videos[:args.batch]], [i for _, i in videos[:args.batch]])  # warm-up
    for p in singles:
        run_pipeline(p, config, [videos[0][0]], [videos[0][1]])

    def run_batched():
        for k in range(0, len(videos), args.batch):
            chunk = videos[k:k + args.batch]
            chunk += [chunk[-1]] * (args.batch - len(chunk))
            run_pipeline(batched, config, [v for v, _ in chunk], [i for _, i in chunk])

    def run_isolated(pipe, items):
        for v, i in items:
            run_pipeline(pipe, config, [v], [i])

    def run_parallel():
        threads = [threading.Thread(target=run_isolated, args=(p, videos[n::args.instances]))
                   for n, p in enumerate(singles)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    t_batched = timed(run_batched)
    t_single = timed(lambda: run_isolated(singles[0], videos))
    t_parallel = timed(run_parallel)
    n = len(videos)
    print(f"{n} VP9 clips 320x180, 90 frames each; T={config.num_frames} sampled frames resized to "
          f"{config.frame_size}x{config.frame_size}; CPU DALI, {args.threads} threads per pipeline")
    print(f"batched (batch {args.batch}):        {n / t_batched:6.2f} videos/s  (1.00)")
    print(f"isolated (batch 1, 1 instance):  {n / t_single:6.2f} videos/s  ({t_batched / t_single:.2f})")
    print(f"isolated (batch 1, {args.instances} instances): {n / t_parallel:6.2f} videos/s  ({t_batched / t_parallel:.2f})")


if __name__ == "__main__":
    main()
