"""Side by side on the same videos: the reference approach vs the Triton cpu pipeline.

    .venv/bin/python benchmarks/bench_pipeline.py            # both sets, defaults (~10 min on 2 cores)
    .venv/bin/python benchmarks/bench_pipeline.py --quick    # fewer videos and concurrencies
    .venv/bin/python benchmarks/bench_pipeline.py --smoke    # tiny models, 3 clips: the script runs (make test)
    .venv/bin/python benchmarks/bench_pipeline.py --variants default no-dedup throughput   # each change (~25 min)
    .venv/bin/python benchmarks/bench_pipeline.py --sets current --variants before default # what the ORT thread tuning bought
    .venv/bin/python benchmarks/bench_pipeline.py --variants default int8   # + the opt-in INT8 backbone

Two video sets (``--sets``): ``current``, panning textures where every frame changes (the set of
the earlier runs), and ``mix``, two clips per class closer to real content (benchmarks/content_mix.py:
slides and a terminal with exact repeats, animation on twos, game-like and camera-like motion).
On each set:

(a) The reference approach, as the reference project ran it: PyTorch eager, one video at a time,
    PyAV decode, the backbone over 3 x 64 frames (once per temporal scale), then each of the 4
    temporal models on each of the 4 TTA views in turn (batch 1).
(b) The Triton cpu pipeline (real tritonserver, python backend + ONNX Runtime), production-size
    models (EfficientNetV2-S 256x256 random init, four 65M-parameter temporal models random
    init), videos sent over gRPC with 1 and 4 requests in flight (asking the answer cache off, so
    every request runs the pipeline); the best concurrency counts.

Prints videos/s and the ratio per set and variant, the ceiling of the ratio (the reference's
seconds per video over the served backbone's alone, at 64 frames and at the frames actually
computed), the per-stage compute and CPU time per video, the distinct decoded pictures per video
with a bit-for-bit check of the features with and without the identical-frame skip on the
production backbone, and (first variant) a repeated file's latency from the answer cache vs its
first. Writes ``report.json`` and ``report.md`` into ``--work`` (default runs/bench_pipeline).

Variants (``--variants``) are serving settings applied to the same exported repository (only
the configs change, not the weights): ``default`` = VidclsConfig() defaults, ``no-dedup`` = without
the identical-frame skip, ``throughput`` = throughput mode for the temporal models (preferred batch
of two videos, queue delay = the measured backbone time of one video), ``before`` = the settings
before the ONNX Runtime thread tuning, ``int8`` = the opt-in INT8 backbone (quantized once, calibrated on the
benchmark's own videos, its feature check reported), or ``NAME:key=value,key=value`` = the
defaults with those ``config.serving`` fields changed.

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
from bench_serving import (VP9_FAST, encode_once, make_checkpoints, panning_frames, run_load, smoke_config,
                           work_dir)  # same checkpoints, inputs and load loop

# Serving settings before the CPU tuning (what the code did: every session ORT defaults, spinning on).
BEFORE = {"ort_intra_op_threads": 0, "backbone_threads": 0, "temporal_threads": 0, "ort_spinning": True,
          "cpu_backbone_instances": 1}
# "no-dedup": without the identical-frame skip (what it buys). "throughput": throughput mode for the
# temporal models (its queue delay is set from the backbone's measured time per video at start).
NAMED_VARIANTS = {"before": BEFORE, "int8": {"backbone_precision": "int8"}, "no-dedup": {"dedup_frames": False},
                  "throughput": {"temporal_preferred_videos": 2}}


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
            # Only this server's stubs (its process group): other servers on a shared machine have
            # stubs of the same model names.
            if "triton_python_backend_stub" not in cmd or os.getpgid(int(entry)) != root:
                continue
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        model_file = cmd.split()[1] if len(cmd.split()) > 1 else ""  # .../<model>/1/model.py
        for m in models:
            if f"/{m}/" in model_file:
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


def variant_config(spec: str, base: VidclsConfig | None = None) -> tuple[str, VidclsConfig]:
    base = base or VidclsConfig()
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


def backbone_in_triton(url: str, config: VidclsConfig, frames: np.ndarray, reps: int,
                       admin_key: str | None = None) -> dict:
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
        before = fetch_statistics(url, admin_key=admin_key)
        t0 = time.perf_counter()
        for _ in range(reps):
            once()
        wall = time.perf_counter() - t0
        time.sleep(STATS_SETTLE_S)
        after = fetch_statistics(url, admin_key=admin_key)
    step = next(st for st in diff_statistics(before, after, wall) if st.model == s.backbone)
    n = reps * len(frames)
    return {"frames": n, "busy_s": step.busy_s, "frames_per_s": n / step.busy_s,
            "client_frames_per_s": n / wall}


def backbone_standalone(config: VidclsConfig, model: Path, frames: np.ndarray, reps: int) -> dict:
    """The same ONNX file with the same session settings the served model uses, in this process."""
    from vidcls.ort import chunked_run, make_session, session_threads

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


def dedup_check(config: VidclsConfig, model: Path, sets: dict[str, list[Path]]) -> dict:
    """Distinct decoded pictures per video, and the served features with and without the
    identical-frame skip on the production backbone: must be equal bit for bit."""
    from vidcls.dedup import distinct_frames, expand
    from vidcls.ort import chunked_run, make_session, session_threads
    from vidcls.video import load_frames

    s = config.serving
    session = make_session(model, intra_op_threads=session_threads(config, "backbone", s.cpu_backbone_instances),
                           spinning=s.ort_spinning)
    name = session.get_inputs()[0].name
    out: dict = {"distinct": {}, "max_abs_diff": 0.0, "checked": [], "backbone_s": {}}
    for videos in sets.values():
        for path in videos:
            frames, _ = load_frames(path, config)
            distinct, mapping = distinct_frames(frames)
            out["distinct"][path.name] = len(distinct)
            if len(distinct) < len(frames):  # the others run the same 64 frames either way
                t0 = time.perf_counter()
                full = chunked_run(session, name, frames, config.backbone_batch)
                t1 = time.perf_counter()
                kept = chunked_run(session, name, distinct, config.backbone_batch)
                t2 = time.perf_counter()
                diff = float(np.abs(expand(kept[None], mapping[None])[0] - full).max())
                out["max_abs_diff"] = max(out["max_abs_diff"], diff)
                out["checked"].append(path.name)
                # back to back, so the machine's load is about the same for both
                out["backbone_s"][path.name] = {"all_frames": t1 - t0, "distinct": t2 - t1}
    return out


def repeat_latency(url: str, config: VidclsConfig, payloads: list) -> dict:
    """Each file twice, one request at a time, answer cache on: the first runs the pipeline (the
    sweeps asked for the cache off, so nothing is stored yet), the second is answered from the cache."""
    first = run_load(url, config, payloads, 1, answer_cache=True)
    again = run_load(url, config, payloads, 1, answer_cache=True)
    same = all(np.array_equal(first["probabilities"][k], again["probabilities"][k]) for k in first["probabilities"])
    return {"first_p50_s": first["p50_s"], "repeat_p50_s": again["p50_s"],
            "repeat_max_s": again["p95_s"], "ratio": again["p50_s"] / first["p50_s"], "same_answers": same,
            "errors": first["errors"] + again["errors"]}


def run_triton(name: str, config: VidclsConfig, repo: Path, work: Path, sets: dict[str, list[Path]],
               concurrencies: list[int], min_requests: int, backbone_reps: int,
               quiet: tuple[float, float], distinct: dict[str, int], measure_repeats: bool = False) -> dict:
    from vidcls.client.stats import diff_statistics, fetch_statistics
    from vidcls.launcher import TritonServer
    from vidcls.video import load_frames

    configure_repository(config, repo)
    first_video = next(iter(sets.values()))[0]
    frames, _ = load_frames(first_video, config)
    out: dict = {"variant": name, "serving": dataclasses.asdict(config.serving), "sets": {}}
    sv = config.serving
    stage_models = {"decode": [sv.decode], "backbone": [sv.backbone], "temporal": config.temporal_model_names(),
                    "python steps": [sv.probe, sv.views, sv.average, sv.ensemble]}
    model_names = [m for names in stage_models.values() for m in names]
    t0 = time.perf_counter()
    with TritonServer(repo, log_path=work / f"tritonserver_{name}.log") as server:
        out["server_start_s"] = time.perf_counter() - t0
        print(f"  [{name}] server ready in {out['server_start_s']:.0f} s", flush=True)
        run_load(server.grpc_url, config, [(first_video.name, np.frombuffer(first_video.read_bytes(), np.uint8)[None])],
                 1)  # first request: the stubs' lazy imports
        # The machine was quiet before the server started (checked by the caller); this short wait
        # lets the warm-up's own load fade. Not longer: with ORT spinning on ('before'), the idle
        # server's own pools keep the load up (measured: the 4 temporal stubs ~12% each while idle).
        out["load1_start"] = wait_for_quiet(quiet[0], min(quiet[1], 20.0))
        for set_name, videos in sets.items():
            payloads = [(p.name, np.frombuffer(p.read_bytes(), np.uint8)[None]) for p in videos]
            # Frames the backbone computes per video: the distinct pictures with the skip on.
            frames_of = {p.name: (distinct[p.name] if sv.dedup_frames else config.num_frames) for p in videos}
            sweep = []
            for c in concurrencies:
                todo = payloads * max(1, -(-max(min_requests, 3 * c) // len(payloads)))
                before = fetch_statistics(server.grpc_url, admin_key=server.admin_key)
                cpu0 = stub_cpu_s(server.pid, model_names)
                with LoadMeter(server.pid) as meter:
                    row = run_load(server.grpc_url, config, todo, c)
                cpu1 = stub_cpu_s(server.pid, model_names)
                time.sleep(STATS_SETTLE_S)
                after = fetch_statistics(server.grpc_url, admin_key=server.admin_key)
                steps = diff_statistics(before, after, row["wall_s"], ensemble={sv.ensemble, sv.pipeline})
                row.update(stage_summary(config, steps, row["videos"]))
                row["cpu_s_per_video"] = {stage: sum(cpu1[m] - cpu0[m] for m in names) / max(row["videos"], 1)
                                          for stage, names in stage_models.items()}
                bb = row["models"].get(sv.backbone)
                computed = sum(frames_of[n] for n, _ in todo)
                row["backbone_frames_per_s"] = computed / bb["busy_s"] if bb and bb["busy_s"] else None
                row["conditions"] = meter.result
                sweep.append(row)
                st, cpu = row["stage_s_per_video"], row["cpu_s_per_video"]
                print(f"  [{name}/{set_name}] concurrency {c}: {row['videos_per_s']:.3f} videos/s ({row['videos']} "
                      f"videos, {len(row['errors'])} errors, p50 {row['p50_s']:.1f} s); compute s/video: decode "
                      f"{st['decode']:.2f}, backbone {st['backbone']:.2f}, temporal {st['temporal']:.2f}, python "
                      f"{st['python steps']:.2f}; CPU s/video: decode {cpu['decode']:.2f}, backbone {cpu['backbone']:.2f}, "
                      f"temporal {cpu['temporal']:.2f}, python {cpu['python steps']:.2f}; "
                      f"other load {100 * meter.result['other_cpu_share']:.0f}%", flush=True)
            best = max(sweep, key=lambda r: r["videos_per_s"])
            entry = {"sweep": sweep, "best": {"concurrency": best["concurrency"], "videos_per_s": best["videos_per_s"]},
                     "backbone_frames_per_video": statistics.mean(frames_of.values())}
            if measure_repeats and sv.answer_cache_entries:
                entry["repeat"] = repeat_latency(server.grpc_url, config, payloads)
                r = entry["repeat"]
                print(f"  [{name}/{set_name}] repeated file: p50 {1e3 * r['repeat_p50_s']:.1f} ms vs first "
                      f"{r['first_p50_s']:.1f} s ({100 * r['ratio']:.2f} %), same answers {r['same_answers']}", flush=True)
            out["sets"][set_name] = entry
        with LoadMeter(server.pid) as meter:
            out["backbone_in_triton"] = backbone_in_triton(server.grpc_url, config, frames, backbone_reps,
                                                   server.admin_key)
        out["backbone_in_triton"]["conditions"] = meter.result
    with LoadMeter() as meter:  # after the server stopped: nothing else of ours runs
        out["backbone_standalone"] = backbone_standalone(
            config, repo / sv.backbone / "1" / config.backbone_onnx_file, frames, backbone_reps)
    out["backbone_standalone"]["conditions"] = meter.result
    iso, alone = out["backbone_in_triton"], out["backbone_standalone"]
    out["backbone_ratio_isolated"] = iso["frames_per_s"] / alone["frames_per_s"]
    print(f"  [{name}] backbone: standalone {alone['frames_per_s']:.1f} frames/s, in Triton alone "
          f"{iso['frames_per_s']:.1f} ({100 * out['backbone_ratio_isolated']:.0f}%)", flush=True)
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


SET_TITLES = {"current": "current set (panning textures, 320x240, 100-300 frames, H.264 + VP9)",
              "mix": "content mix (2 clips per class: slides, terminal, animation on twos, game, camera; "
                     "320x240, H.264 + VP9)"}
SETTINGS = ("backbone_precision", "dedup_frames", "answer_cache_entries", "temporal_preferred_videos",
            "temporal_queue_delay_us", "ort_intra_op_threads", "backbone_threads", "temporal_threads", "ort_spinning",
            "cpu_backbone_instances", "max_queue_delay_us", "backbone_batch", "temporal_batch", "cpu_instances")


def markdown(report: dict) -> str:
    m = report["machine"]
    models = ("Smoke run: the tiny test models, figures mean nothing." if report.get("smoke") else
              "Default config: EfficientNetV2-S 256x256 x 64 frames (random init), 4 x 65M-parameter temporal models, "
              "4 TTA views.")
    lines = ["# vidcls pipeline benchmark", "",
             f"Machine: {m['cpus']} cores, {m['cpu_model']}; torch {m['torch']}, onnxruntime {m['onnxruntime']}. "
             + models, ""]
    d = report.get("dedup")
    if d:
        lines += ["Distinct decoded pictures of the 64 sampled frames per video: "
                  + ", ".join(f"{k} {v}" for k, v in d["distinct"].items()) + ". Features with the identical-frame "
                  f"skip vs all 64 frames on the production backbone ({len(d['checked'])} videos with repeats): max "
                  f"|difference| {d['max_abs_diff']:.1e}."
                  + ("".join(f" {k}: backbone {v['all_frames']:.1f} s on all 64 frames vs {v['distinct']:.1f} s on "
                             "the distinct pictures (back to back)." for k, v in d.get("backbone_s", {}).items())), ""]
    for set_name, videos in report["sets"].items():
        ref = report.get("reference", {}).get(set_name)
        lines += [f"## {SET_TITLES.get(set_name, set_name)}", "", f"Videos: {', '.join(videos)}.", ""]
        if ref:
            st = ref["stage_s_per_video"]
            lines += [f"(a) Reference approach (PyTorch eager, one video at a time, backbone 3 x 64 frames, 16 temporal "
                      f"runs of batch 1): {ref['videos_per_s']:.4f} videos/s ({ref['seconds'] / ref['videos']:.1f} s per "
                      f"video; decode {st['decode']:.2f}, backbone {st['backbone']:.1f}, temporal {st['temporal']:.2f}); "
                      f"load before {ref['conditions']['load1_before']:.2f}, other processes "
                      f"{100 * ref['conditions']['other_cpu_share']:.0f}% of the machine.", ""]
        lines += ["| variant | concurrency | videos/s | p50 s | ratio | backbone / temporal / decode CPU s per video | "
                  "load before | other processes |", "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
        for v in report["variants"]:
            entry = v["sets"].get(set_name)
            if not entry:
                continue
            for r in entry["sweep"]:
                cpu, c = r["cpu_s_per_video"], r["conditions"]
                ratio = f"{r['videos_per_s'] / ref['videos_per_s']:.2f}x" if ref else "-"
                lines.append(f"| {v['variant']} | {r['concurrency']} | {r['videos_per_s']:.4f} | {r['p50_s']:.1f} | "
                             f"{ratio} | {cpu['backbone']:.2f} / {cpu['temporal']:.2f} / {cpu['decode']:.2f} | "
                             f"{c['load1_before']:.2f} | {100 * c['other_cpu_share']:.0f}% |")
        lines += [""]
        if ref:
            lines += ["| variant | best videos/s | ratio to reference | ceiling (64 frames) | share of that ceiling | "
                      "ceiling (frames computed) | max \\|served - reference\\| |",
                      "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
            for v in report["variants"]:
                entry = v["sets"].get(set_name)
                if not entry or "ceiling" not in entry:
                    continue
                ratio = entry["best"]["videos_per_s"] / ref["videos_per_s"]
                lines.append(f"| {v['variant']} | {entry['best']['videos_per_s']:.4f} | **{ratio:.2f}x** | "
                             f"{entry['ceiling']:.2f}x | {100 * ratio / entry['ceiling']:.0f}% | "
                             f"{entry['ceiling_computed']:.2f}x | {entry['max_prob_diff_vs_reference']:.1e} |")
            lines += ["", "Ceiling: the reference's seconds per video over the served backbone's alone (its standalone "
                      "frames/s times the instances that fit the cores side by side), i.e. the ratio if decode and the "
                      "temporal models cost nothing; at 64 frames per video, and at the frames the backbone actually "
                      "computes (the distinct pictures with the identical-frame skip).", ""]
        for v in report["variants"]:
            rep = v["sets"].get(set_name, {}).get("repeat")
            if rep:
                lines += [f"Repeated file (`{v['variant']}`, answer cache on, one request at a time): p50 "
                          f"{1e3 * rep['repeat_p50_s']:.1f} ms vs {rep['first_p50_s']:.2f} s the first time "
                          f"(**{100 * rep['ratio']:.2f} %**), answers identical: {rep['same_answers']}.", ""]
    lines += ["## Variants", ""]
    for v in report["variants"]:
        iso, alone = v["backbone_in_triton"], v["backbone_standalone"]
        lines += [f"- `{v['variant']}`: " + ", ".join(f"{k}={v['serving'][k]}" for k in SETTINGS)
                  + f". Backbone standalone {alone['frames_per_s']:.1f} frames/s, inside Triton "
                  f"{iso['frames_per_s']:.1f} ({100 * v['backbone_ratio_isolated']:.0f}%)."]
    if report.get("int8_check"):
        q = report["int8_check"]
        lines += ["", f"INT8 backbone feature check (export refuses below {q['min_cosine_required']}): cosine "
                  f"similarity with the FP32 features, worst frame {q['worst_cosine']:.4f}, mean {q['mean_cosine']:.4f}, "
                  f"on {q['check_frames']} frames that did not calibrate."]
    lines += ["", f"Total run time {report['run_s']:.0f} s. Command: `{report['command']}`", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--work", default=None, help="cache (checkpoints, repository, videos) and report (default "
                                                    "runs/bench_pipeline, runs/bench_pipeline_smoke with --smoke)")
    parser.add_argument("--sets", nargs="+", default=["current", "mix"], choices=["current", "mix"],
                        help="video sets: the panning clips, the content mix (content_mix.py)")
    parser.add_argument("--videos", type=int, default=6, help="videos of the current set")
    parser.add_argument("--mix-videos", type=int, default=8, help="videos of the content mix (2 per class)")
    # The reference's time per video hardly depends on the content (3 x 64 frames, 16 temporal runs).
    parser.add_argument("--reference-videos", type=int, default=3, help="per set (0: all)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=None, help="default 1 4 (quick: 1 2)")
    parser.add_argument("--min-requests", type=int, default=None,
                        help="requests per concurrency level at least (default: videos; quick: 4)")
    parser.add_argument("--variants", nargs="+", default=["default"])
    parser.add_argument("--no-reference", action="store_true", help="only the Triton variants")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads of the reference")
    parser.add_argument("--backbone-reps", type=int, default=None, help="64-frame runs per backbone measurement (3; quick 2)")
    parser.add_argument("--keep-denormals", action="store_true",
                        help="reference: do not flush denormals (random weights then run slower than trained ones)")
    parser.add_argument("--quick", action="store_true", help="4 videos per set, reference on 3, concurrency 1 2")
    parser.add_argument("--load-threshold", type=float, default=1.5)
    parser.add_argument("--max-wait", type=float, default=180.0, help="seconds to wait for the load to drop per phase")
    parser.add_argument("--rebuild", action="store_true", help="re-export the repository")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny test models, 1 + 2 clips, reference on 1, concurrency 1, no waiting for a quiet "
                             "machine: checks that the script runs, measures nothing")
    args = parser.parse_args(argv)
    if args.quick:
        args.videos, args.mix_videos = min(args.videos, 4), min(args.mix_videos, 4)
    if args.smoke:
        args.videos, args.mix_videos, args.reference_videos = 1, 2, 1
        args.concurrency, args.min_requests, args.backbone_reps, args.max_wait = [1], 1, 1, 0.0
    concurrencies = args.concurrency or ([1, 2] if args.quick else [1, 4])
    reps = args.backbone_reps or (2 if args.quick else 3)
    quiet = (args.load_threshold, args.max_wait)

    t_start = time.perf_counter()
    work = work_dir(args.work, "bench_pipeline", args.smoke)
    config = smoke_config() if args.smoke else VidclsConfig()
    print("preparing checkpoints, repository and videos (cached in", work, ")", flush=True)
    checkpoints = make_checkpoints(config, work / "checkpoints")
    repo = work / "repo_cpu"
    prepare_repository(config, checkpoints, repo, args.rebuild)
    from content_mix import make_mix_videos

    all_sets = {"current": lambda: make_videos(work / "videos", args.videos),
                "mix": lambda: make_mix_videos(work / "videos_mix", args.mix_videos)}
    sets = {name: all_sets[name]() for name in args.sets}
    n_ref = args.reference_videos or None
    min_requests = args.min_requests or (4 if args.quick else max(len(v) for v in sets.values()))
    model = repo / config.serving.backbone / "1" / "model.onnx"
    print("distinct pictures per video and the bit-for-bit feature check", flush=True)
    dedup = dedup_check(config, model, sets)
    print(f"  {dedup['distinct']}; max |difference| {dedup['max_abs_diff']:.1e} on {dedup['checked']}", flush=True)
    if "throughput" in [v.partition(":")[0] for v in args.variants]:
        # The queue delay of throughput mode: what separates two videos at the temporal step under
        # load, about one video's backbone time with every core on it.
        from vidcls.video import load_frames

        frames, _ = load_frames(next(iter(sets.values()))[0], config)
        alone = backbone_standalone(config, model, frames, 1)
        NAMED_VARIANTS["throughput"] = dict(NAMED_VARIANTS["throughput"],
                                            temporal_queue_delay_us=int(1e6 * config.num_frames / alone["frames_per_s"]))
    variants = [variant_config(v, config) for v in args.variants]
    int8_variants = [cfg for _, cfg in variants if cfg.serving.backbone_precision == "int8"]

    report: dict = {"machine": machine(), "sets": {k: [p.name for p in v] for k, v in sets.items()}, "dedup": dedup,
                    "variants": [], "reference": {}, "smoke": args.smoke,
                    "command": " ".join([Path(sys.argv[0]).as_posix()] + (argv if argv is not None else sys.argv[1:]))}
    if int8_variants:
        report["int8_check"] = prepare_int8(int8_variants[0], repo, [p for v in sets.values() for p in v])
        print(f"  INT8 backbone: worst-frame cosine with FP32 features {report['int8_check']['worst_cosine']:.4f} "
              f"(mean {report['int8_check']['mean_cosine']:.4f}) on {report['int8_check']['check_frames']} frames",
              flush=True)
    if not args.no_reference:
        for set_name, videos in sets.items():
            print(f"(a) reference approach, {set_name} set, {len(videos[:n_ref])} videos", flush=True)
            wait_for_quiet(*quiet)
            with LoadMeter() as meter:
                ref = run_reference(config, checkpoints, videos[:n_ref], args.threads, not args.keep_denormals)
            ref["conditions"] = meter.result
            report["reference"][set_name] = ref
            print(f"  reference ({set_name}): {ref['videos_per_s']:.4f} videos/s", flush=True)
    for i, (name, cfg) in enumerate(variants):
        print(f"(b) Triton cpu pipeline, variant {name}", flush=True)
        wait_for_quiet(*quiet)
        report["variants"].append(run_triton(name, cfg, repo, work, sets, concurrencies, min_requests, reps, quiet,
                                             dedup["distinct"], measure_repeats=(i == 0)))
    configure_repository(config, repo)  # leave the cache with the default settings

    for v in report["variants"]:
        sv = v["serving"]
        threads = v["backbone_standalone"]["intra_op_threads"] or 1
        # instances run side by side only as far as the cores go (2 x 2 threads on 2 cores: x1)
        parallel = max(1.0, min(sv["cpu_backbone_instances"] or sv["cpu_instances"], (os.cpu_count() or 1) / threads))
        per_frame = 1.0 / (v["backbone_standalone"]["frames_per_s"] * parallel)
        for set_name, entry in v["sets"].items():
            ref = report["reference"].get(set_name)
            if not ref:
                continue
            ref_s = ref["seconds"] / ref["videos"]
            entry["ceiling"] = ref_s / (config.num_frames * per_frame)
            entry["ceiling_computed"] = ref_s / (entry["backbone_frames_per_video"] * per_frame)
            probs = entry["sweep"][0]["probabilities"]
            diffs = [float(np.abs(probs[k] - p).max()) for k, p in ref["probabilities"].items() if k in probs]
            entry["max_prob_diff_vs_reference"] = max(diffs) if diffs else float("nan")
    report["run_s"] = time.perf_counter() - t_start

    print("\n" + "=" * 100)
    for v in report["variants"]:
        for set_name, entry in v["sets"].items():
            ref = report["reference"].get(set_name)
            line = (f"{v['variant']:<12} {set_name:<8} Triton {entry['best']['videos_per_s']:.4f} videos/s at "
                    f"concurrency {entry['best']['concurrency']}")
            if ref:
                ratio = entry["best"]["videos_per_s"] / ref["videos_per_s"]
                line += (f"  vs reference {ref['videos_per_s']:.4f}  ->  RATIO {ratio:.2f}x  (ceiling {entry['ceiling']:.2f}x"
                         f" = {100 * ratio / entry['ceiling']:.0f}%; with skipped frames {entry['ceiling_computed']:.2f}x)"
                         f"  max diff {entry['max_prob_diff_vs_reference']:.1e}")
            print(line)
    for v in report["variants"]:
        for entry in v["sets"].values():
            for r in entry["sweep"]:
                r["probabilities"] = {k: p.tolist() for k, p in r["probabilities"].items()}
    for ref in report["reference"].values():
        ref["probabilities"] = {k: p.tolist() for k, p in ref["probabilities"].items()}
    work.mkdir(parents=True, exist_ok=True)
    (work / "report.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (work / "report.md").write_text(markdown(report))
    print(f"report: {work / 'report.md'}, {work / 'report.json'} ({report['run_s']:.0f} s)")
    ok = all(not r["errors"] for v in report["variants"] for e in v["sets"].values() for r in e["sweep"])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
