"""The whole GPU benchmark in one command, for a machine with an NVIDIA GPU.

    python benchmarks/gpu_bench.py                                   # NGC Triton image via docker
    python benchmarks/gpu_bench.py --tritonserver /opt/tritonserver/bin/tritonserver   # local server
    python benchmarks/gpu_bench.py --decode cpu --variants default gpu_model_instances=2

Needs: the ``gpu`` extra (TensorRT >= 10, onnxruntime-gpu) and torch with CUDA in this Python; a
Triton with the dali, onnxruntime, tensorrt and python backends (docker/Dockerfile.triton built as
``vidcls-triton:0.1.0``, or ``--tritonserver``); perf_analyzer (``make tools`` or on PATH).
Run it on the GPU model that serves (a TensorRT plan is specific to the GPU and TensorRT version,
so build the plans with the TensorRT of the Triton image: the same NGC release, see docker/).

Steps, each printed and written to ``--work``/report.json:
1. production-size checkpoints (random init) and H.264 + VP9 test clips (as bench_pipeline);
2. the gpu repository: the export's mixed-precision FP16 graphs (TensorRT 11 takes precision from
   the graph), a TensorRT plan for the backbone (checked against the graph on the CPU by
   ``vidcls.export.tensorrt.build_engine``), the temporal models on ``--temporal-backend``;
3. the backbone engine alone: frames/s with trtexec when on PATH, and directly through
   ``EngineRunner`` (including the host→device copy of the uint8 frames, as served);
   limit = frames/s / 64 frames per video;
4. the BiLSTM temporal model's FP16 graph both ways, TensorRT plan vs ONNX Runtime CUDA EP: ms
   per batch at each view length, and each one's largest probability difference from the FP32
   graph on ONNX Runtime CPU (TensorRT has known slow and wrong BiLSTM cases: use the one that is
   correct and fast);
5. Triton with the repository, a perf_analyzer concurrency sweep per settings variant
   (``--variants``: ``default`` or ``key=value,...`` changes of config.serving, e.g. instance
   counts, max_queue_delay_us, backbone_batch), with Triton's per-model statistics;
6. served videos/s at the best point vs the backbone-alone limit (target: >= 70%).

NOT RUN YET: written on a machine without a GPU. The pieces it calls (repository generation,
engine building and parity checks, perf_analyzer harness) are tested on CPU where possible.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from vidcls.config import VidclsConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import make_videos
from bench_serving import make_checkpoints


def log(msg: str) -> None:
    print(msg, flush=True)


def variant(spec: str, base: VidclsConfig) -> tuple[str, VidclsConfig]:
    if spec == "default":
        return spec, base
    fields = {f.name: getattr(base.serving, f.name) for f in dataclasses.fields(base.serving)}
    changes = {}
    for item in spec.split(","):
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"config.serving has no field {key!r}")
        cur = fields[key]
        changes[key] = (value.lower() in ("1", "true")) if isinstance(cur, bool) else type(cur)(value)
    return spec, base.replace(serving=dataclasses.replace(base.serving, **changes))


# ---- 3. the backbone engine alone ---------------------------------------------------------------------
def backbone_engine_fps(plan: Path, config: VidclsConfig, seconds: float = 20.0) -> dict:
    from vidcls.export.tensorrt import EngineRunner

    out: dict = {}
    b, t, s = config.serving.backbone_batch, config.num_frames, config.frame_size
    trtexec = shutil.which("trtexec")
    if trtexec:
        cmd = [trtexec, f"--loadEngine={plan}", f"--shapes={config.serving.frames}:{b}x{t}x{s}x{s}x3",
               f"--duration={int(seconds)}", "--warmUp=2000", "--useSpinWait"]
        res = subprocess.run(cmd, capture_output=True, text=True)
        m = re.search(r"Throughput:\s*([\d.]+)\s*qps", res.stdout)
        out["trtexec_cmd"] = " ".join(cmd)
        if m:
            out["trtexec_frames_per_s"] = float(m.group(1)) * b * t  # one query = b videos of t frames
        else:
            out["trtexec_error"] = res.stdout[-2000:] + res.stderr[-2000:]
    runner = EngineRunner(plan)
    x = np.random.default_rng(0).integers(0, 256, (b, t, s, s, 3), dtype=np.uint8)
    for _ in range(3):
        runner(x)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        runner(x)  # host uint8 → GPU → features back to the host, as one served execution
        n += 1
    out["direct_frames_per_s"] = n * b * t / (time.perf_counter() - t0)
    out["frames_per_s"] = max(out.get("trtexec_frames_per_s", 0.0), out["direct_frames_per_s"])
    out["limit_videos_per_s"] = out["frames_per_s"] / config.num_frames
    return out


# ---- 4. BiLSTM: TensorRT vs ONNX Runtime CUDA ------------------------------------------------------------
def temporal_both_ways(onnx_path: Path, work: Path, config: VidclsConfig, repeats: int = 20,
                       reference_path: Path | None = None) -> dict:
    """``onnx_path`` (the served graph) on TensorRT and on the CUDA EP against ``reference_path``
    (the FP32 graph; default ``onnx_path``) on the CPU."""
    import onnxruntime as ort

    from vidcls.export.parity import TRT_PROBS_ATOL
    from vidcls.export.tensorrt import EngineRunner, build_engine
    from vidcls.ort import make_session

    plan = work / "temporal_check.plan"
    out: dict = {"atol": TRT_PROBS_ATOL, "rows": []}
    try:
        build_engine(onnx_path, plan, config, "temporal", check=False)
        trt_run = EngineRunner(plan)
    except Exception as exc:  # reported: TensorRT may refuse the graph
        out["tensorrt_error"] = f"{type(exc).__name__}: {exc}"[:2000]
        trt_run = None
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        out["cuda_error"] = "onnxruntime-gpu is not installed (no CUDAExecutionProvider)"
        cuda = None
    else:
        cuda = make_session(onnx_path, providers=["cuda"])
    cpu = make_session(reference_path or onnx_path)
    name = cpu.get_inputs()[0].name
    rng = np.random.default_rng(0)
    for length in sorted(set(config.view_lengths.values())):
        for b in sorted({1, config.serving.temporal_batch}):
            x = np.abs(rng.standard_normal((b, length, config.feature_dim))).astype(np.float32)
            want = cpu.run(None, {name: x})[0]
            row = {"batch": b, "length": length}
            for label, fn in (("tensorrt", trt_run and (lambda: trt_run(x))),
                              ("ort_cuda", cuda and (lambda: cuda.run(None, {name: x})[0]))):
                if not fn:
                    continue
                got = fn()
                for _ in range(3):
                    fn()
                t0 = time.perf_counter()
                for _ in range(repeats):
                    fn()
                row[f"{label}_ms"] = 1e3 * (time.perf_counter() - t0) / repeats
                row[f"{label}_max_abs_diff"] = float(np.abs(got - want).max())
                row[f"{label}_ok"] = row[f"{label}_max_abs_diff"] <= TRT_PROBS_ATOL
            out["rows"].append(row)
    for label in ("tensorrt", "ort_cuda"):
        rows = [r for r in out["rows"] if f"{label}_ms" in r]
        if rows:
            out[f"{label}_total_ms"] = sum(r[f"{label}_ms"] for r in rows)
            out[f"{label}_correct"] = all(r[f"{label}_ok"] for r in rows)
    ok = [lab for lab in ("tensorrt", "ort_cuda") if out.get(f"{lab}_correct")]
    out["recommended"] = min(ok, key=lambda lab: out[f"{lab}_total_ms"]) if ok else None
    return out


# ---- 5. Triton ---------------------------------------------------------------------------------------
class Server:
    """Triton in the NGC-based image (docker) or a local tritonserver binary, on free ports."""

    def __init__(self, repo: Path, image: str | None, binary: str | None, logfile: Path):
        from vidcls.admin_access import new_key
        from vidcls.launcher import free_port

        self.repo, self.image, self.binary, self.logfile = repo.resolve(), image, binary, logfile
        self.admin_key = new_key()  # the admin protocols restricted, as everywhere vidcls starts Triton
        self.grpc, self.http, self.metrics = free_port(), free_port(), free_port()
        self.proc = None
        self.container = f"vidcls-gpu-bench-{os.getpid()}"

    def __enter__(self):
        from vidcls.admin_access import server_args

        args = ["--model-repository=/models" if self.image else f"--model-repository={self.repo}",
                "--strict-readiness=true", "--exit-on-error=true",
                f"--grpc-port={self.grpc}", f"--http-port={self.http}", f"--metrics-port={self.metrics}",
                *server_args(self.admin_key)]
        if self.image:
            cmd = ["docker", "run", "--rm", "--name", self.container, "--gpus", "all", "--network", "host",
                   "--ipc", "host",  # the python backend moves tensors through /dev/shm
                   "-v", f"{self.repo}:/models", self.image,
                   "tritonserver", *args]
        else:
            cmd = [self.binary, *args]
        self.proc = subprocess.Popen(cmd, stdout=open(self.logfile, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        import tritonclient.grpc as grpcclient

        deadline = time.monotonic() + 900  # TensorRT EP engines and DALI autoserialization at load
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Triton exited ({self.proc.returncode}); log: {self.logfile}")
            try:
                with grpcclient.InferenceServerClient(self.url) as c:
                    if c.is_server_ready():
                        return self
            except Exception:  # not up yet
                pass
            time.sleep(2)
        raise RuntimeError(f"Triton not ready after 900 s; log: {self.logfile}")

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc}"

    def __exit__(self, *exc):
        if self.image:
            subprocess.run(["docker", "stop", "-t", "20", self.container], capture_output=True)
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)


def sweep(url: str, config: VidclsConfig, videos: list[Path], work: Path, name: str, concurrency: str,
          admin_key: str | None = None) -> dict:
    from vidcls.client.perf import (PerfOptions, build_command, find_perf_analyzer, perf_environment,
                                    read_perf_csv, run_perf_analyzer, write_input_data)
    from vidcls.client.stats import diff_statistics, fetch_statistics, markdown_table

    binary = find_perf_analyzer()
    data = work / "input_data.json"
    write_input_data(videos, data, config.serving.video)
    opts = PerfOptions(model=config.serving.ensemble, url=url, concurrency_range=concurrency,
                       measurement_mode="time_windows", measurement_interval_ms=10000,
                       parameters=[(config.serving.cache_parameter, "false", "bool")],  # measure the pipeline
                       admin_key=admin_key)  # perf_analyzer reads the statistics API
    csv_path = work / f"perf_{name}.csv"
    before, t0 = fetch_statistics(url, admin_key=admin_key), time.perf_counter()
    run_perf_analyzer(build_command(binary, opts, data, csv_path), perf_environment(binary),
                      work / f"perf_{name}.log", timeout=3600)
    steps = diff_statistics(before, fetch_statistics(url, admin_key=admin_key), time.perf_counter() - t0, ensemble={config.serving.ensemble, config.serving.pipeline})
    rows = read_perf_csv(csv_path)
    best = max(rows, key=lambda r: r.get("Inferences/Second", 0.0))
    return {"rows": rows, "best_concurrency": best.get("Concurrency"), "best_videos_per_s": best["Inferences/Second"],
            "statistics": [s.as_dict() for s in steps], "statistics_md": markdown_table(steps)}


def fidelity(url: str, config: VidclsConfig, checkpoints: Path, videos: list[Path]) -> dict:
    """Served probabilities vs the PyTorch reference (CPU, FP32) on the same files, against the
    GPU tolerance of vidcls.export.parity (GPU_SERVED_PROBS_ATOL, GPU_SAME_CLASS_MIN)."""
    import tritonclient.grpc as grpcclient

    from vidcls.export.parity import GPU_SAME_CLASS_MIN, GPU_SERVED_PROBS_ATOL
    from vidcls.reference import ReferencePipeline

    reference = ReferencePipeline.from_checkpoints(checkpoints)
    s = config.serving
    diffs, same = [], 0
    with grpcclient.InferenceServerClient(url) as client:
        for path in videos:
            data = np.frombuffer(Path(path).read_bytes(), np.uint8)[None]
            inp = grpcclient.InferInput(s.video, list(data.shape), "UINT8")
            inp.set_data_from_numpy(data)
            served = client.infer(s.ensemble, [inp], outputs=[grpcclient.InferRequestedOutput(s.probabilities)])
            got = served.as_numpy(s.probabilities).reshape(-1)
            want = np.asarray(reference.classify(path)).reshape(-1)
            diffs.append(float(np.abs(got - want).max()))
            same += int(got.argmax() == want.argmax())
    share = same / max(len(videos), 1)
    return {"videos": len(videos), "max_abs_prob_diff": max(diffs, default=None), "same_class": share,
            "atol": GPU_SERVED_PROBS_ATOL, "same_class_min": GPU_SAME_CLASS_MIN,
            "ok": bool(diffs) and max(diffs) <= GPU_SERVED_PROBS_ATOL and share >= GPU_SAME_CLASS_MIN}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--work", default="runs/gpu_bench")
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--decode", choices=("dali", "cpu"), default="dali",
                        help="dali = NVDEC (needs a GPU/MIG slice with a decoder); cpu = PyAV in the python backend")
    parser.add_argument("--temporal-backend", choices=("onnxruntime", "tensorrt"), default=None,
                        help="default: config.serving.gpu_temporal_backend")
    parser.add_argument("--image", default="vidcls-triton:0.1.0", help="serving image (docker/Dockerfile.triton)")
    parser.add_argument("--tritonserver", default=None, help="a local tritonserver binary instead of docker")
    parser.add_argument("--concurrency", default="1:32:2", help="perf_analyzer --concurrency-range")
    parser.add_argument("--variants", nargs="+", default=["default"],
                        help="config.serving settings per sweep: default | key=value,key=value")
    parser.add_argument("--skip-export", action="store_true", help="reuse --work/repo_gpu")
    args = parser.parse_args(argv)

    from vidcls.cli import configure_logging
    from vidcls.export.repository import build_repository

    configure_logging(verbose=True)  # the export's parity and TensorRT reports, row by row

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base = VidclsConfig()
    report: dict = {"decode": args.decode}
    log("1. checkpoints and clips")
    checkpoints = make_checkpoints(base, work / "checkpoints")
    videos = make_videos(work / "videos", args.videos)
    repo = work / "repo_gpu"
    temporal_backend = args.temporal_backend or base.serving.gpu_temporal_backend
    if not args.skip_export:
        log("2. gpu repository: FP16 graphs, backbone plan (checked against the graph), temporal on "
            + temporal_backend)
        t0 = time.perf_counter()
        build_repository(checkpoints, repo, target="gpu", decode=args.decode, backend="tensorrt",
                         temporal_backend=temporal_backend, config=base)
        report["export_s"] = time.perf_counter() - t0
    log("3. backbone engine alone")
    bb = backbone_engine_fps(repo / base.serving.backbone / "1" / "model.plan", base)
    report["backbone_engine"] = bb
    log(f"   {bb['frames_per_s']:.0f} frames/s -> limit {bb['limit_videos_per_s']:.1f} videos/s")
    log("4. BiLSTM temporal model: TensorRT plan vs ONNX Runtime CUDA")
    onnx_dir = work / "temporal_onnx"
    from vidcls.checkpoint import load_ensemble
    from vidcls.export.fp16 import write_fp16
    from vidcls.export.onnx_export import export_temporal_onnx

    models, _, _ = load_ensemble(checkpoints)
    fp32_path = export_temporal_onnx(models[0], base, onnx_dir / "model_fp32.onnx")
    onnx_path = write_fp16(fp32_path, onnx_dir / "model.onnx", base, "temporal")
    tb = temporal_both_ways(onnx_path, onnx_dir, base, reference_path=fp32_path)
    report["temporal_both_ways"] = tb
    for r in tb["rows"]:
        log("   " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    log(f"   recommended for the BiLSTM models: {tb['recommended']} (serving uses {temporal_backend})")
    report["variants"] = []
    for spec in args.variants:
        name, cfg = variant(spec, base)
        log(f"5. Triton sweep, variant {name}")
        build_repository(None, repo, target="gpu", decode=args.decode, backend="tensorrt",
                         temporal_backend=temporal_backend, configs_only=True, config=cfg)
        safe = re.sub(r"[^A-Za-z0-9_.=-]", "_", name)
        with Server(repo, None if args.tritonserver else args.image, args.tritonserver,
                    work / f"tritonserver_{safe}.log") as server:
            res = sweep(server.url, cfg, videos, work, safe, args.concurrency, server.admin_key)
            if "fidelity" not in report:
                report["fidelity"] = fid = fidelity(server.url, cfg, checkpoints, videos)
                log(f"   fidelity vs the PyTorch reference: max |dp| {fid['max_abs_prob_diff']:.3g} (<= {fid['atol']}), "
                    f"same class {100 * fid['same_class']:.1f}% (>= {100 * fid['same_class_min']:.1f}%): "
                    + ("OK" if fid["ok"] else "FAILED"))
        res["variant"] = name
        res["fraction_of_limit"] = res["best_videos_per_s"] / bb["limit_videos_per_s"]
        report["variants"].append(res)
        log(res["statistics_md"])
        log(f"   served {res['best_videos_per_s']:.2f} videos/s at concurrency {res['best_concurrency']} = "
            f"{100 * res['fraction_of_limit']:.0f}% of the backbone-alone limit {bb['limit_videos_per_s']:.2f}")
    build_repository(None, repo, target="gpu", decode=args.decode, backend="tensorrt",
                     temporal_backend=temporal_backend, configs_only=True, config=base)
    (work / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    best = max(report["variants"], key=lambda v: v["best_videos_per_s"])
    log("=" * 90)
    log(f"backbone engine alone: {bb['frames_per_s']:.0f} frames/s = {bb['limit_videos_per_s']:.2f} videos/s limit; "
        f"served (best: {best['variant']}) {best['best_videos_per_s']:.2f} videos/s = "
        f"{100 * best['fraction_of_limit']:.0f}% (target >= 70%)")
    return 0 if report.get("fidelity", {}).get("ok") else 1


if __name__ == "__main__":
    raise SystemExit(main())
