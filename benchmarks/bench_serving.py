"""The Triton cpu pipeline with production-size models: videos/s and latency over gRPC.

    .venv/bin/python benchmarks/bench_serving.py [--videos 6] [--concurrency 1 2] [--work DIR]
    .venv/bin/python benchmarks/bench_serving.py --smoke   # tiny models, 2 short clips: the script runs (make test)

Default config (T=64 frames of 256x256, EfficientNetV2-S with random weights, four 65M-parameter
temporal models with random weights, 4 TTA views), a cpu repository built with
``build_repository``, the real tritonserver of ``vidcls serve``, real H.264 and VP9 files (10 s,
320x240, 25 fps) sent over gRPC with 1, 2, ... requests in flight. Prints videos/s, latency p50/p95
and Triton's per-model compute time per execution. Not a test: the machines are shared, so
compare figures of one run. Checkpoints and the repository are kept in --work and reused.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

import numpy as np

from vidcls.config import VidclsConfig


def make_checkpoints(config: VidclsConfig, out: Path) -> Path:
    import torch

    from vidcls.checkpoint import find_models, save_model
    from vidcls.models.temporal import SuperEnhancedTemporalModel

    try:
        if len(find_models(out)) == config.num_models:
            return out
    except FileNotFoundError:
        pass
    for i, seed in enumerate(config.model_seeds):
        torch.manual_seed(seed)
        model = SuperEnhancedTemporalModel(config.temporal).eval()
        save_model(out / f"model_{i}", model, config, meta={"seed": seed, "backbone_weights": "none"})
    return out


# What --smoke runs: the test suite's tiny models (vidcls.config.VidclsConfig.tiny), a few short
# clips, one request at a time. It checks that a benchmark still runs end to end; its figures mean nothing.
def smoke_config() -> VidclsConfig:
    return VidclsConfig.tiny(num_models=2)


def work_dir(work: str | None, name: str, smoke: bool) -> Path:
    """``--work``, else runs/NAME, or runs/NAME_smoke for a smoke run (so that its tiny models and
    short clips never land in the cache a real run reuses)."""
    return Path(work or f"runs/{name}{'_smoke' if smoke else ''}")


# libvpx's fast settings: benchmark inputs are encoded once, their encoding speed is not measured.
VP9_FAST = {"deadline": "realtime", "cpu-used": "8"}


def panning_frames(n: int, size=(320, 240), seed: int = 0):
    """``n`` RGB frames: a textured background panning under a moving block (content changes every
    frame, like video, unlike a still). The benchmarks' shared input content."""
    w, h = size
    base = (np.random.default_rng(seed).random((h, w, 3)) * 200).astype(np.uint8)
    for k in range(n):
        f = np.roll(base, 3 * k, axis=1)
        x, y = (7 * k) % (w - 40), (5 * k) % (h - 40)
        f[y:y + 40, x:x + 40] = (255, (9 * k) % 256, 80)
        yield f


def encode_once(path: Path, frames, codec: str, options: dict | None = None, fps: float = 25.0) -> Path:
    """Encode ``frames`` to ``path`` unless it exists (the benchmarks cache their inputs), through a
    temporary name so an interrupted run leaves no half-written file to be reused."""
    from vidcls.video import encode_video

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp{path.suffix}")
        encode_video(tmp, frames, fps=fps, codec=codec, options=options)
        tmp.replace(path)
    return path


def make_videos(out: Path, count: int, seconds: float = 10.0, size=(320, 240), fps: float = 25.0) -> list[Path]:
    """``count`` clips of ``seconds``, H.264 (.mp4) and VP9 (.webm), of :func:`panning_frames`."""
    paths = []
    for i in range(count):
        vp9 = i % 3 == 2
        paths.append(encode_once(out / f"bench_{i}_{seconds:g}s{'.webm' if vp9 else '.mp4'}",
                                 panning_frames(int(seconds * fps), size, seed=i),
                                 "libvpx-vp9" if vp9 else "libx264", VP9_FAST if vp9 else None, fps))
    return paths


def run_load(url: str, config: VidclsConfig, payloads: list[tuple[str, np.ndarray]], concurrency: int,
             outputs: list[str] | None = None, answer_cache: bool = False) -> dict:
    """Every payload once, ``concurrency`` requests in flight (one gRPC client per worker), asking
    for ``outputs`` (default PROBABILITIES).

    The payloads repeat files, so by default each request asks the server not to use its answer
    cache (every request runs the pipeline); ``answer_cache`` lets repeats be answered from it."""
    import tritonclient.grpc as grpcclient

    s = config.serving
    wanted = outputs or [s.probabilities]
    latencies, errors, probs = [], [], {}
    lock = threading.Lock()
    queue = iter(range(len(payloads)))
    parameters = None if answer_cache else {s.cache_parameter: False}

    def worker():
        with grpcclient.InferenceServerClient(url) as client:
            while True:
                with lock:
                    i = next(queue, None)
                if i is None:
                    return
                name, data = payloads[i]
                inp = grpcclient.InferInput(s.video, list(data.shape), "UINT8")
                inp.set_data_from_numpy(data)
                t0 = time.perf_counter()
                try:
                    res = client.infer(s.ensemble, [inp], outputs=[grpcclient.InferRequestedOutput(n) for n in wanted],
                                       client_timeout=900, parameters=parameters)
                except Exception as exc:  # counted and reported
                    with lock:
                        errors.append(str(exc)[:300])
                    continue
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    probs.setdefault(name, res.as_numpy(s.probabilities)[0])

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = sorted(latencies)
    return {"concurrency": concurrency, "videos": len(lat), "errors": errors, "wall_s": wall,
            "videos_per_s": len(lat) / wall,
            "p50_s": statistics.median(lat) if lat else float("nan"),
            "p95_s": lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))] if lat else float("nan"),
            "probabilities": probs}


def model_compute(server) -> dict[str, tuple[int, int, float]]:
    """model → (inferences, executions, compute ms per execution) from the statistics of a
    :class:`~vidcls.launcher.TritonServer` (asked with its operator key)."""
    import tritonclient.grpc as grpcclient

    from vidcls.admin_access import grpc_headers

    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        stats = client.get_inference_statistics(headers=grpc_headers(server.admin_key), as_json=True)["model_stats"]
    out = {}
    for m in stats:
        execs = int(m.get("execution_count", 0))
        st = m.get("inference_stats", {})
        ns = sum(int(st.get(k, {}).get("ns", 0)) for k in ("compute_input", "compute_infer", "compute_output"))
        out[m["name"]] = (int(m.get("inference_count", 0)), execs, ns / 1e6 / max(execs, 1))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--work", default=None, help="cache and logs (default runs/bench_serving, "
                                                    "runs/bench_serving_smoke with --smoke)")
    parser.add_argument("--rebuild", action="store_true", help="re-export the repository")
    parser.add_argument("--smoke", action="store_true",
                        help="the tiny test models, 2 clips of 1 s, concurrency 1: checks that the script runs, measures nothing")
    args = parser.parse_args(argv)

    from vidcls.export.repository import build_repository, validate_repository
    from vidcls.launcher import TritonServer

    config = smoke_config() if args.smoke else VidclsConfig()
    seconds = 1.0 if args.smoke else 10.0
    if args.smoke:
        args.videos, args.concurrency = min(args.videos, 2), [1]
    work = work_dir(args.work, "bench_serving", args.smoke)
    t0 = time.perf_counter()
    checkpoints = make_checkpoints(config, work / "checkpoints")
    repo = work / "repo_cpu"
    try:
        if args.rebuild:
            raise ValueError
        validate_repository(repo)
    except (ValueError, FileNotFoundError):
        build_repository(checkpoints, repo, target="cpu")
    videos = make_videos(work / "videos", args.videos, seconds)
    payloads = [(p.name, np.frombuffer(p.read_bytes(), np.uint8)[None]) for p in videos]
    print(f"prepared checkpoints, cpu repository and {len(videos)} videos in {time.perf_counter() - t0:.0f} s")

    t0 = time.perf_counter()
    with TritonServer(repo, log_path=work / "tritonserver.log") as server:
        print(f"server ready in {time.perf_counter() - t0:.1f} s at {server.grpc_url}")
        run_load(server.grpc_url, config, payloads[:1], 1)  # first request: python stubs' lazy imports
        rows = [run_load(server.grpc_url, config, payloads, c) for c in args.concurrency]
        compute = model_compute(server)

    print("\nTriton cpu pipeline, " + ("tiny test models (smoke run)" if args.smoke else
                                        "default config (EfficientNetV2-S 256x256 x 64 frames, 4 x 65M temporal, 4 views)"))
    print(f"{'concurrency':>11} {'videos':>6} {'errors':>6} {'videos/s':>9} {'p50 s':>7} {'p95 s':>7}")
    for r in rows:
        print(f"{r['concurrency']:>11} {r['videos']:>6} {len(r['errors']):>6} {r['videos_per_s']:>9.3f} "
              f"{r['p50_s']:>7.2f} {r['p95_s']:>7.2f}")
    print(f"\n{'model':<18} {'requests':>8} {'executions':>10} {'compute ms/exec':>15}")
    for name, (inf, execs, ms) in sorted(compute.items()):
        print(f"{name:<18} {inf:>8} {execs:>10} {ms:>15.1f}")
    return 0 if all(not r["errors"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
