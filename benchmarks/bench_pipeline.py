"""Side by side on the same videos: the reference approach vs the Triton cpu pipeline (issue 7).

    .venv/bin/python benchmarks/bench_pipeline.py            # ~5 min on 2 cores (after the first export)
    .venv/bin/python benchmarks/bench_pipeline.py --quick    # fewer videos and concurrencies
    .venv/bin/python benchmarks/bench_pipeline.py --variants before default   # what the tuning bought
    .venv/bin/python benchmarks/bench_pipeline.py --variants default int8     # + the opt-in INT8 backbone

(a) The reference approach, as the reference project ran it: PyTorch eager, one video at a time,
    PyAV decode, the backbone over 3 x 64 frames (once per temporal scale), then each of the 4
    temporal models on each of the 4 TTA views in turn (batch 1).
(b) The Triton cpu pipeline (real tritonserver, python backend + ONNX Runtime), production-size
    models (EfficientNetV2-S 256x256 random init, four 65M-parameter temporal models random
    init), videos sent over gRPC with 1, 2, 4 requests in flight; the best concurrency counts.

Prints videos/s of both and their ratio, the per-stage compute time per video from Triton's
statistics API (decode, backbone, temporal, python steps), and the backbone's frames/s inside
Triton vs the same ONNX file run standalone with the same threads and settings. Writes
``report.json`` and ``report.md`` into ``--work`` (default runs/bench_pipeline).

Variants (``--variants``) are serving settings applied to the same exported repository (only
the configs change, not the weights): ``default`` = VidclsConfig() defaults, ``before`` = the
settings before issue 7 (every ORT session at ONNX Runtime's default threads, spinning on),
``int8`` = the defaults with the opt-in INT8 backbone (``backbone_precision=int8``; quantized once,
calibrated on the benchmark's own videos, and its feature check reported), or
``NAME:key=value,key=value`` = the defaults with those ``config.serving`` fields changed.

Conditions are recorded with every figure: the 1-minute load average before each phase and the
share of the machine that processes other than this benchmark (and its server) used during it.
The machines are shared: compare figures of one run, not of different runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from vidcls.config import VidclsConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import (VP9_FAST, encode_once, make_checkpoints, panning_frames,  # noqa: E402
                           run_load)  # same checkpoints, inputs and load loop

# Serving settings before issue 7 (what the code did: every session ORT defaults, spinning on).
BEFORE = {"ort_intra_op_threads": 0, "backbone_threads": 0, "temporal_threads": 0, "ort_spinning": True,
          "cpu_backbone_instances": 1}
NAMED_VARIANTS = {"before": BEFORE, "int8": {"backbone_precision": "int8"}}


# Triton counts an execution in its statistics after it has sent the responses: read the counters
# right after the last response and the last execution can be missing (seen: half of a 2-request
# backbone window).
STATS_SETTLE_S = 1.0


# ---- machine load ----------------------------------------------------------------------------------
def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def _system_busy_s() -> float:
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return (sum(parts[:8]) - idle) / _clock_ticks()


def _tree_cpu_s(root: int | None) -> float:
    """utime + stime of ``root`` and every descendant alive now (the server and its stubs)."""
    if root is None:
        return 0.0
    parent, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / _clock_ticks()
    total = 0.0
    for pid in cpu:
        p = pid
        while p > 1:
            if p == root:
                total += cpu[pid]
                break
            p = parent.get(p, 0)
    return total


def stub_cpu_s(root: int | None, models: list[str]) -> dict[str, float]:
    """CPU seconds (utime + stime) so far of each model's python-backend stub under ``root``.

    The stub's command line names its model folder (``.../<model>/1/model.py``). CPU time is a
    cost that contention does not inflate the way wall-clock compute times are inflated when the
    steps share the cores (it still counts spin-waiting, which is real CPU taken from the others).
    """
    out = {m: 0.0 for m in models}
    if root is None:
        return out
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            if "triton_python_backend_stub" not in cmd:
                continue
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        for m in models:
            if f"/{m}/" in cmd or cmd.rstrip().endswith(f"/{m}"):
                out[m] += (int(fields[11]) + int(fields[12])) / _clock_ticks()
                break
    return out


class LoadMeter:
    """Share of the machine used by processes other than this one and ``server_pid``'s tree."""

    def __init__(self, server_pid: int | None = None):
        self.server_pid = server_pid
        self.load_before = os.getloadavg()[0]

    def __enter__(self):
        self.t0 = time.perf_counter()
        self.sys0 = _system_busy_s()
        t = os.times()
        self.own0 = t.user + t.system + _tree_cpu_s(self.server_pid)
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t0
        t = os.times()
        own = t.user + t.system + _tree_cpu_s(self.server_pid) - self.own0
        busy = _system_busy_s() - self.sys0
        cores = os.cpu_count() or 1
        self.result = {"wall_s": wall, "load1_before": self.load_before,
                       "own_cpu_share": own / (wall * cores),
                       "other_cpu_share": max(0.0, busy - own) / (wall * cores)}


def wait_for_quiet(threshold: float, max_wait: float) -> float:
    """Poll until the 1-minute load average is below ``threshold`` (at most ``max_wait`` s)."""
    deadline = time.monotonic() + max_wait
    load = os.getloadavg()[0]
    announced = False
    while load >= threshold and time.monotonic() < deadline:
        if not announced:
            print(f"  waiting for load < {threshold} (now {load:.2f}) ...", flush=True)
            announced = True
        time.sleep(5)
        load = os.getloadavg()[0]
    if load >= threshold:
        print(f"  load still {load:.2f} after {max_wait:.0f} s: measuring anyway (recorded)", flush=True)
    return load


# ---- inputs ----------------------------------------------------------------------------------------
def make_videos(out: Path, count: int, size=(320, 240), fps: float = 25.0) -> list[Path]:
    """``count`` clips of 100..300 frames, H.264 (.mp4) and VP9 (.webm), textured moving content."""
    lengths = [100, 300, 175, 250, 125, 200, 150, 275]
    paths = []
    for i in range(count):
        vp9 = i % 3 == 2
        n = lengths[i % len(lengths)]
        paths.append(encode_once(out / f"clip_{i}_{n}f{'.webm' if vp9 else '.mp4'}", panning_frames(n, size, seed=i),
                                 "libvpx-vp9" if vp9 else "libx264", VP9_FAST if vp9 else None, fps))
    return paths


def prepare_repository(config: VidclsConfig, checkpoints: Path, repo: Path, rebuild: bool) -> None:
    """Export once (ONNX export + parity checks take minutes); later runs reuse the weights."""
    from vidcls.export.repository import build_repository, validate_repository

    if not rebuild:
        try:
            validate_repository(repo)
            return
        except (ValueError, FileNotFoundError):
            pass
    t0 = time.perf_counter()
    build_repository(checkpoints, repo, target="cpu", config=config)
    print(f"  exported the cpu repository in {time.perf_counter() - t0:.0f} s", flush=True)


def prepare_int8(config: VidclsConfig, repo: Path, videos: list[Path]) -> dict:
    """The INT8 backbone graph beside the FP32 one (quantized once, then cached) and its feature
    check on the videos' odd frames (the even ones calibrate)."""
    from vidcls.export.quantize import calibration_frames, check_int8, feature_summary, quantize_backbone

    folder = repo / config.serving.backbone / "1"
    fp32, int8 = folder / "model.onnx", folder / config.backbone_onnx_file
    seconds = None
    if not int8.exists():
        t0 = time.perf_counter()
        # Unchecked here: the check is reported below instead. On random-init weights it is not
        # meaningful (their features are ~1e-6 and nearly alike across frames), and a refused
        # graph would leave nothing to time; speed does not depend on the weights' values.
        quantize_backbone(fp32, int8, config, videos, check=False)
        seconds = time.perf_counter() - t0
        print(f"  quantized the backbone to INT8 in {seconds:.0f} s", flush=True)
    _, check = calibration_frames(videos, config)
    report = check_int8(int8, fp32, config, check)
    return {**feature_summary(report, config), "ok": report.ok, "quantize_s": seconds}


def configure_repository(config: VidclsConfig, repo: Path) -> None:
    """Rewrite configs, shims and vidcls_config.json for ``config``; the ONNX weights stay."""
    from vidcls.export.repository import build_repository, validate_repository

    build_repository(None, repo, target="cpu", configs_only=True, config=config)
    validate_repository(repo)


def variant_config(spec: str) -> tuple[str, VidclsConfig]:
    base = VidclsConfig()
    name, _, assignments = spec.partition(":")
    changes: dict = dict(NAMED_VARIANTS.get(name, {}))
    if name not in NAMED_VARIANTS and name != "default" and not assignments:
        raise SystemExit(f"unknown variant {spec!r}: {', '.join(['default', *NAMED_VARIANTS])} or NAME:key=value,...")
    fields = {f.name: f for f in dataclasses.fields(base.serving)}
    for item in filter(None, assignments.split(",")):
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"variant {name}: config.serving has no field {key!r}")
        current = getattr(base.serving, key)
        changes[key] = (value.lower() in ("1", "true", "yes")) if isinstance(current, bool) else type(current)(value)
    return name, base.replace(serving=dataclasses.replace(base.serving, **changes))


# ---- (a) the reference approach -----------------------------------------------------------------------
def run_reference(config: VidclsConfig, checkpoints: Path, videos: list[Path], threads: int,
                  flush_denormals: bool = True) -> dict:
    import torch

    from vidcls.checkpoint import load_ensemble
    from vidcls.models.backbone import build_backbone, extract_features
    from vidcls.sampling import scale_indices, tta_views
    from vidcls.video import load_frames

    torch.set_num_threads(threads)
    # Random-init EfficientNetV2-S activations underflow into denormals, which made PyTorch ~2x
    # slower in benchmarks/bench_extract.py; trained weights do not produce them. Flushed by default
    # so the reference is not handicapped by our random weights (ONNX Runtime showed no such effect:
    # session.set_denormal_as_zero changed nothing measurable).
    torch.set_flush_denormal(flush_denormals)
    backbone = build_backbone(config, "none")  # seed 0: the weights the repository was exported with
    models, _, _ = load_ensemble(checkpoints)
    T, L = config.num_frames, config.seq_len
    rows, probs = [], {}
    with torch.inference_mode():
        # Warm-up (oneDNN primitive caches, allocator): not counted, as Triton's warm-up is not.
        extract_features(backbone, np.zeros((config.backbone_batch, config.frame_size, config.frame_size, 3),
                                            np.uint8), config.backbone_batch)
        for path in videos:
            t0 = time.perf_counter()
            frames, _ = load_frames(path, config)
            t1 = time.perf_counter()
            # The reference project ran the CNN once per temporal scale: 3 x 64 frames.
            total = torch.zeros(L, config.feature_dim)
            for s in config.scales:
                feats = extract_features(backbone, frames, config.backbone_batch)
                rows_s = scale_indices(T, s)
                padded = torch.zeros(L, config.feature_dim)
                padded[:len(rows_s)] = feats[torch.as_tensor(rows_s)]
                total = total + padded
            seq = total / len(config.scales)
            t2 = time.perf_counter()
            views = tta_views(seq, config.tta_views)
            p = torch.stack([torch.stack([torch.softmax(m(views[v][None]), dim=-1)[0] for v in config.tta_views])
                             for m in models])  # each model, each view in turn, batch 1
            probs[path.name] = p.mean(dim=1).mean(dim=0).numpy()
            t3 = time.perf_counter()
            rows.append({"video": path.name, "decode_s": t1 - t0, "backbone_s": t2 - t1, "temporal_s": t3 - t2,
                         "total_s": t3 - t0})
            print(f"  reference {path.name}: {t3 - t0:.1f} s (decode {t1 - t0:.2f}, backbone {t2 - t1:.1f}, "
                  f"temporal {t3 - t2:.2f})", flush=True)
    total = sum(r["total_s"] for r in rows)
    torch.set_flush_denormal(False)
    return {"videos": len(rows), "seconds": total, "videos_per_s": len(rows) / total, "per_video": rows,
            "denormals_flushed": flush_denormals,
            "stage_s_per_video": {k: statistics.mean(r[f"{k}_s"] for r in rows)
                                  for k in ("decode", "backbone", "temporal")},
            "torch_threads": threads, "probabilities": probs}


# ---- (b) the Triton pipeline ------------------------------------------------------------------------
def stage_summary(config: VidclsConfig, steps, videos: int) -> dict:
    """Triton statistics of one window → compute seconds per video by stage, and per model."""
    s = config.serving
    stage_of = {s.probe: "python steps", s.views: "python steps", s.average: "python steps",
                s.decode: "decode", s.backbone: "backbone"}
    stage_of.update({m: "temporal" for m in config.temporal_model_names()})
    stages: dict[str, float] = {"decode": 0.0, "backbone": 0.0, "temporal": 0.0, "python steps": 0.0}
    models = {}
    for st in steps:
        if st.is_ensemble:
            continue
        stage = stage_of.get(st.model)
        if stage:
            stages[stage] += st.busy_s / max(videos, 1)
        models[st.model] = {"requests": st.requests, "executions": st.executions, "avg_batch": st.avg_batch,
                            "busy_s": st.busy_s, "busy_s_per_video": st.busy_s / max(videos, 1),
                            "compute_ms_per_execution": 1e3 * st.busy_s / max(st.executions, 1),
                            "queue_ms_per_request": st.queue_ms}
    return {"stage_s_per_video": stages, "models": models}


def backbone_in_triton(url: str, config: VidclsConfig, frames: np.ndarray, reps: int) -> dict:
    """FRAMES sent straight to the backbone model, one request at a time: its compute time per
    execution from Triton's statistics (what the python model + ORT cost inside the server)."""
    import tritonclient.grpc as grpcclient

    from vidcls.client.stats import diff_statistics, fetch_statistics

    s = config.serving
    data = np.ascontiguousarray(frames[None])
    with grpcclient.InferenceServerClient(url) as client:
        def once():
            inp = grpcclient.InferInput(s.frames, list(data.shape), "UINT8")
            inp.set_data_from_numpy(data)
            client.infer(s.backbone, [inp], client_timeout=600)

        once()  # warm-up at this exact shape
        before = fetch_statistics(url)
        t0 = time.perf_counter()
        for _ in range(reps):
            once()
        wall = time.perf_counter() - t0
        time.sleep(STATS_SETTLE_S)
        after = fetch_statistics(url)
    step = next(st for st in diff_statistics(before, after, wall) if st.model == s.backbone)
    n = reps * len(frames)
    return {"frames": n, "busy_s": step.busy_s, "frames_per_s": n / step.busy_s,
            "client_frames_per_s": n / wall}


def backbone_standalone(config: VidclsConfig, model: Path, frames: np.ndarray, reps: int) -> dict:
    """The same ONNX file with the same session settings the served model uses, in this process."""
    from vidcls.ort import make_session
    from vidcls.triton_models.base import chunked_run
    from vidcls.triton_models.onnx_models import session_threads

    s = config.serving
    threads = session_threads(config, "backbone", s.cpu_backbone_instances or s.cpu_instances)
    session = make_session(model, intra_op_threads=threads, spinning=config.serving.ort_spinning)
    name = session.get_inputs()[0].name
    chunked_run(session, name, frames, config.backbone_batch)  # warm-up
    t0 = time.perf_counter()
    for _ in range(reps):
        chunked_run(session, name, frames, config.backbone_batch)
    wall = time.perf_counter() - t0
    return {"frames": reps * len(frames), "seconds": wall, "frames_per_s": reps * len(frames) / wall,
            "intra_op_threads": threads, "spinning": config.serving.ort_spinning}


def run_triton(name: str, config: VidclsConfig, repo: Path, work: Path, videos: list[Path],
               concurrencies: list[int], min_requests: int, backbone_reps: int,
               quiet: tuple[float, float]) -> dict:
    from vidcls.client.stats import diff_statistics, fetch_statistics
    from vidcls.launcher import TritonServer
    from vidcls.video import load_frames

    configure_repository(config, repo)
    payloads = [(p.name, np.frombuffer(p.read_bytes(), np.uint8)[None]) for p in videos]
    frames, _ = load_frames(videos[0], config)
    out: dict = {"variant": name, "serving": dataclasses.asdict(config.serving), "sweep": []}
    sv = config.serving
    stage_models = {"decode": [sv.decode], "backbone": [sv.backbone], "temporal": config.temporal_model_names(),
                    "python steps": [sv.probe, sv.views, sv.average]}
    model_names = [m for names in stage_models.values() for m in names]
    t0 = time.perf_counter()
    with TritonServer(repo, log_path=work / f"tritonserver_{name}.log") as server:
        out["server_start_s"] = time.perf_counter() - t0
        print(f"  [{name}] server ready in {out['server_start_s']:.0f} s", flush=True)
        run_load(server.grpc_url, config, payloads[:1], 1)  # first request: the stubs' lazy imports
        # The machine was quiet before the server started (checked by the caller); this short wait
        # lets the warm-up's own load fade. Not longer: with ORT spinning on ('before'), the idle
        # server's own pools keep the load up (measured: the 4 temporal stubs ~12% each while idle).
        out["load1_start"] = wait_for_quiet(quiet[0], min(quiet[1], 20.0))
        for c in concurrencies:
            todo = payloads * max(1, -(-max(min_requests, 3 * c) // len(payloads)))
            before = fetch_statistics(server.grpc_url)
            cpu0 = stub_cpu_s(server.pid, model_names)
            with LoadMeter(server.pid) as meter:
                row = run_load(server.grpc_url, config, todo, c)
            cpu1 = stub_cpu_s(server.pid, model_names)
            time.sleep(STATS_SETTLE_S)
            after = fetch_statistics(server.grpc_url)
            steps = diff_statistics(before, after, row["wall_s"], ensemble={config.serving.ensemble, config.serving.pipeline})
            row.update(stage_summary(config, steps, row["videos"]))
            row["cpu_s_per_video"] = {stage: sum(cpu1[m] - cpu0[m] for m in names) / max(row["videos"], 1)
                                      for stage, names in stage_models.items()}
            bb = row["models"].get(config.serving.backbone)
            row["backbone_frames_per_s"] = (bb["requests"] * config.num_frames / bb["busy_s"]) if bb else None
            row["conditions"] = meter.result
            out["sweep"].append(row)
            st, cpu = row["stage_s_per_video"], row["cpu_s_per_video"]
            print(f"  [{name}] concurrency {c}: {row['videos_per_s']:.3f} videos/s ({row['videos']} videos, "
                  f"{len(row['errors'])} errors, p50 {row['p50_s']:.1f} s); compute s/video: decode {st['decode']:.2f}, "
                  f"backbone {st['backbone']:.2f}, temporal {st['temporal']:.2f}, python {st['python steps']:.2f}; "
                  f"CPU s/video: decode {cpu['decode']:.2f}, backbone {cpu['backbone']:.2f}, temporal "
                  f"{cpu['temporal']:.2f}, python {cpu['python steps']:.2f}; "
                  f"other load {100 * meter.result['other_cpu_share']:.0f}%", flush=True)
        with LoadMeter(server.pid) as meter:
            out["backbone_in_triton"] = backbone_in_triton(server.grpc_url, config, frames, backbone_reps)
        out["backbone_in_triton"]["conditions"] = meter.result
    with LoadMeter() as meter:  # after the server stopped: nothing else of ours runs
        out["backbone_standalone"] = backbone_standalone(
            config, repo / config.serving.backbone / "1" / config.backbone_onnx_file, frames, backbone_reps)
    out["backbone_standalone"]["conditions"] = meter.result
    best = max(out["sweep"], key=lambda r: r["videos_per_s"])
    out["best"] = {"concurrency": best["concurrency"], "videos_per_s": best["videos_per_s"]}
    iso, alone = out["backbone_in_triton"], out["backbone_standalone"]
    out["backbone_ratio_isolated"] = iso["frames_per_s"] / alone["frames_per_s"]
    out["backbone_ratio_best_concurrency"] = (best["backbone_frames_per_s"] or 0) / alone["frames_per_s"]
    c1 = next((r for r in out["sweep"] if r["concurrency"] == 1), None)
    out["backbone_ratio_concurrency_1"] = (c1["backbone_frames_per_s"] or 0) / alone["frames_per_s"] if c1 else None
    print(f"  [{name}] backbone: standalone {alone['frames_per_s']:.1f} frames/s, in Triton alone "
          f"{iso['frames_per_s']:.1f} ({100 * out['backbone_ratio_isolated']:.0f}%), in the pipeline at "
          f"concurrency {best['concurrency']} {best['backbone_frames_per_s']:.1f} "
          f"({100 * out['backbone_ratio_best_concurrency']:.0f}%)", flush=True)
    return out


# ---- report -----------------------------------------------------------------------------------------
def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime
    import torch

    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "platform": platform.platform()}


def markdown(report: dict) -> str:
    ref = report.get("reference")
    lines = ["# vidcls pipeline benchmark (issue 7)", "",
             f"Machine: {report['machine']['cpus']} cores, {report['machine']['cpu_model']}; torch "
             f"{report['machine']['torch']}, onnxruntime {report['machine']['onnxruntime']}. "
             f"{len(report['videos'])} videos (320x240, 100-300 frames, H.264 + VP9). Default config: "
             "EfficientNetV2-S 256x256 x 64 frames (random init), 4 x 65M-parameter temporal models, 4 TTA views.", ""]
    if ref:
        st = ref["stage_s_per_video"]
        lines += ["## (a) Reference approach (PyTorch eager, one video at a time, backbone 3 x 64 frames, "
                  "16 temporal runs of batch 1)", "",
                  f"{ref['videos_per_s']:.4f} videos/s ({ref['seconds'] / ref['videos']:.1f} s per video; decode "
                  f"{st['decode']:.2f} s, backbone {st['backbone']:.1f} s, temporal {st['temporal']:.2f} s); "
                  f"torch threads {ref['torch_threads']}, denormals {'flushed' if ref['denormals_flushed'] else 'kept'}; load before {ref['conditions']['load1_before']:.2f}, other "
                  f"processes {100 * ref['conditions']['other_cpu_share']:.0f}% of the machine.", ""]
    for v in report["variants"]:
        lines += [f"## (b) Triton cpu pipeline, variant `{v['variant']}`", ""]
        changed = {k: v["serving"][k] for k in ("backbone_precision", "ort_intra_op_threads", "backbone_threads",
                                                "temporal_threads",
                                                "ort_spinning", "cpu_backbone_instances", "max_queue_delay_us",
                                                "backbone_batch", "temporal_batch", "cpu_instances")}
        lines += [f"Settings: {', '.join(f'{k}={x}' for k, x in changed.items())}", "",
                  "Per stage and video: compute time from Triton's statistics API (wall time of the executions; "
                  "temporal = the 4 models summed; inflated when the steps share the cores) / CPU time of the "
                  "stage's python-backend processes.", "",
                  "| concurrency | videos | errors | videos/s | p50 s | decode s/video | backbone s/video | "
                  "temporal s/video | python steps s/video | load before | other processes |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in v["sweep"]:
            st, c, cpu = r["stage_s_per_video"], r["conditions"], r["cpu_s_per_video"]
            cells = " | ".join(f"{st[k]:.2f} / {cpu[k]:.2f} CPU" for k in ("decode", "backbone", "temporal", "python steps"))
            lines.append(f"| {r['concurrency']} | {r['videos']} | {len(r['errors'])} | {r['videos_per_s']:.4f} | "
                         f"{r['p50_s']:.1f} | {cells} | {c['load1_before']:.2f} | {100 * c['other_cpu_share']:.0f}% |")
        best = next(r for r in v["sweep"] if r["concurrency"] == v["best"]["concurrency"])
        lines += ["", f"Per model at the best concurrency ({v['best']['concurrency']}), compute from Triton's "
                  "statistics API:", "",
                  "| model | requests | executions | avg batch | compute ms/execution | busy s/video |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for name, m in sorted(best["models"].items()):
            lines.append(f"| {name} | {m['requests']} | {m['executions']} | {m['avg_batch']:.2f} | "
                         f"{m['compute_ms_per_execution']:.0f} | {m['busy_s_per_video']:.3f} |")
        iso, alone = v["backbone_in_triton"], v["backbone_standalone"]
        lines += ["", f"Backbone frames/s: standalone ONNX Runtime (same file, {alone['intra_op_threads'] or 'default'} "
                  f"threads, spinning {alone['spinning']}) {alone['frames_per_s']:.1f}; inside Triton, requests "
                  f"straight to the backbone model {iso['frames_per_s']:.1f} "
                  f"(**{100 * v['backbone_ratio_isolated']:.0f}%**); inside the pipeline at concurrency 1 "
                  f"{100 * (v['backbone_ratio_concurrency_1'] or 0):.0f}%, at the best concurrency "
                  f"{100 * v['backbone_ratio_best_concurrency']:.0f}% (there decode and the temporal models of other "
                  "videos share the cores).", ""]
    lines += ["## Summary", "", "| variant | best concurrency | Triton videos/s | reference videos/s | ratio | "
              "backbone in Triton / standalone |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for v in report["variants"]:
        r = f"{ref['videos_per_s']:.4f}" if ref else "-"
        ratio = f"**{v['best']['videos_per_s'] / ref['videos_per_s']:.2f}x**" if ref else "-"
        lines.append(f"| {v['variant']} | {v['best']['concurrency']} | {v['best']['videos_per_s']:.4f} | {r} | "
                     f"{ratio} | {100 * v['backbone_ratio_isolated']:.0f}% |")
    if ref:
        lines += ["", "Arithmetic ceiling of the ratio on this machine: the reference's seconds per video over the "
                  "served backbone's alone (64 frames at the standalone frames/s times the backbone instances that fit "
                  "the cores side by side), "
                  "i.e. the ratio if decode and the temporal models cost nothing: "
                  + ", ".join(f"`{v['variant']}` {v['ceiling_ratio_backbone_only']:.1f}x" for v in report["variants"])
                  + "."]
    diffs = [(v["variant"], v["serving"]["backbone_precision"], v.get("max_prob_diff_vs_reference"))
             for v in report["variants"] if v.get("max_prob_diff_vs_reference") is not None]
    if diffs:
        lines += ["", "Cross-check, max |Triton - reference| probability over the videos (the reference runs the "
                  "backbone per scale in PyTorch, Triton once in ONNX Runtime): "
                  + ", ".join(f"`{name}` ({precision}) {d:.2e}" for name, precision, d in diffs) + "."]
    if report.get("int8_check"):
        q = report["int8_check"]
        lines += ["", f"INT8 backbone feature check (export refuses below {q['min_cosine_required']}): cosine "
                  f"similarity with the FP32 features, worst frame {q['worst_cosine']:.4f}, mean {q['mean_cosine']:.4f}, "
                  f"on {q['check_frames']} frames that did not calibrate (calibration: the other frames of the same "
                  "videos)."]
    lines += ["", f"Total run time {report['run_s']:.0f} s. Command: `{report['command']}`", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--work", default="runs/bench_pipeline", help="cache (checkpoints, repository, videos) and report")
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--reference-videos", type=int, default=None, help="default: all (quick: 3)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=None, help="default 1 2 4 (quick: 1 2)")
    parser.add_argument("--min-requests", type=int, default=None,
                        help="requests per concurrency level at least (default: videos; quick: 4)")
    parser.add_argument("--variants", nargs="+", default=["default"])
    parser.add_argument("--no-reference", action="store_true", help="only the Triton variants")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads of the reference")
    parser.add_argument("--backbone-reps", type=int, default=None, help="64-frame runs per backbone measurement (3; quick 2)")
    parser.add_argument("--keep-denormals", action="store_true",
                        help="reference: do not flush denormals (random weights then run slower than trained ones)")
    parser.add_argument("--quick", action="store_true", help="4 videos, reference on 3, concurrency 1 2")
    parser.add_argument("--load-threshold", type=float, default=1.5)
    parser.add_argument("--max-wait", type=float, default=180.0, help="seconds to wait for the load to drop per phase")
    parser.add_argument("--rebuild", action="store_true", help="re-export the repository")
    args = parser.parse_args(argv)
    if args.quick:
        args.videos = min(args.videos, 4)
    n_ref = args.reference_videos or (3 if args.quick else args.videos)
    concurrencies = args.concurrency or ([1, 2] if args.quick else [1, 2, 4])
    min_requests = args.min_requests or (4 if args.quick else args.videos)
    reps = args.backbone_reps or (2 if args.quick else 3)
    quiet = (args.load_threshold, args.max_wait)

    t_start = time.perf_counter()
    work = Path(args.work)
    variants = [variant_config(v) for v in args.variants]
    config = VidclsConfig()
    print("preparing checkpoints, repository and videos (cached in", work, ")", flush=True)
    checkpoints = make_checkpoints(config, work / "checkpoints")
    repo = work / "repo_cpu"
    prepare_repository(config, checkpoints, repo, args.rebuild)
    videos = make_videos(work / "videos", args.videos)
    int8_variants = [cfg for _, cfg in variants if cfg.serving.backbone_precision == "int8"]

    report: dict = {"machine": machine(), "videos": [p.name for p in videos], "variants": [],
                    "command": " ".join([Path(sys.argv[0]).as_posix()] + (argv if argv is not None else sys.argv[1:]))}
    if int8_variants:
        report["int8_check"] = prepare_int8(int8_variants[0], repo, videos)
        print(f"  INT8 backbone: worst-frame cosine with FP32 features {report['int8_check']['worst_cosine']:.4f} "
              f"(mean {report['int8_check']['mean_cosine']:.4f}) on {report['int8_check']['check_frames']} frames",
              flush=True)
    if not args.no_reference:
        print(f"(a) reference approach on {n_ref} videos", flush=True)
        wait_for_quiet(*quiet)
        with LoadMeter() as meter:
            ref = run_reference(config, checkpoints, videos[:n_ref], args.threads, not args.keep_denormals)
        ref["conditions"] = meter.result
        report["reference"] = ref
        print(f"  reference: {ref['videos_per_s']:.4f} videos/s", flush=True)
    for name, cfg in variants:
        print(f"(b) Triton cpu pipeline, variant {name}", flush=True)
        wait_for_quiet(*quiet)
        report["variants"].append(run_triton(name, cfg, repo, work, videos, concurrencies, min_requests, reps, quiet))
    configure_repository(config, repo)  # leave the cache with the default settings

    if "reference" in report:
        ref_s = report["reference"]["seconds"] / report["reference"]["videos"]
        for v in report["variants"]:
            sv = v["serving"]
            instances = sv["cpu_backbone_instances"] or sv["cpu_instances"]
            threads = v["backbone_standalone"]["intra_op_threads"] or 1
            # instances run side by side only as far as the cores go (2 x 2 threads on 2 cores: x1)
            parallel = max(1.0, min(instances, (os.cpu_count() or 1) / threads))
            backbone_s = config.num_frames / (v["backbone_standalone"]["frames_per_s"] * parallel)
            v["ceiling_ratio_backbone_only"] = ref_s / backbone_s
        for v in report["variants"]:
            diffs = [float(np.abs(v["sweep"][0]["probabilities"][k] - p).max())
                     for k, p in report["reference"]["probabilities"].items() if k in v["sweep"][0]["probabilities"]]
            v["max_prob_diff_vs_reference"] = max(diffs) if diffs else None
    report["run_s"] = time.perf_counter() - t_start

    print("\n" + "=" * 100)
    ref = report.get("reference")
    for v in report["variants"]:
        line = (f"{v['variant']:<12} Triton {v['best']['videos_per_s']:.4f} videos/s at concurrency "
                f"{v['best']['concurrency']}")
        if ref:
            line += (f"  vs reference {ref['videos_per_s']:.4f} videos/s  ->  RATIO "
                     f"{v['best']['videos_per_s'] / ref['videos_per_s']:.2f}x")
        line += f"   backbone in Triton / standalone {100 * v['backbone_ratio_isolated']:.0f}%"
        print(line)
    for v in report["variants"]:
        for r in v["sweep"]:
            r["probabilities"] = {k: p.tolist() for k, p in r["probabilities"].items()}
    if ref:
        ref["probabilities"] = {k: p.tolist() for k, p in ref["probabilities"].items()}
    work.mkdir(parents=True, exist_ok=True)
    (work / "report.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (work / "report.md").write_text(markdown(report))
    print(f"report: {work / 'report.md'}, {work / 'report.json'} ({report['run_s']:.0f} s)")
    return 0 if all(not r["errors"] for v in report["variants"] for r in v["sweep"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
