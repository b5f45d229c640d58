"""Soak the cpu Triton server with perf_analyzer: zero failures, bounded memory, latency percentiles.

    .venv/bin/python benchmarks/soak.py --short            # ~1 minute (the test uses this)
    .venv/bin/python benchmarks/soak.py --long             # a few minutes (the README figures)
    .venv/bin/python benchmarks/soak.py --url 127.0.0.1:8001 --pid 1234 --short   # a running server

Without ``--url`` it builds a cpu repository of small random-init models (``--preset tiny`` or
``demo``: T=64 frames of 256x256, the tiny CNN) in ``--work`` and starts its own tritonserver on
free loopback ports. At each concurrency it runs perf_analyzer (``client/perf.py``) repeatedly on
real H.264 and VP9 files until that level's time is spent, while a sampler thread reads the
resident memory of the whole server process tree (tritonserver and its python-backend stubs) from
/proc. Requests and failures come from Triton's own statistics (every model, ensemble included),
so a failure anywhere counts even if perf_analyzer hid it.

Writes ``soak.json`` (everything, samples included) and ``soak.md`` (the table for the README)
into ``--out``. Exit status 1 if any request failed or memory grew past ``--max-rss-growth-mb``.

``--hostile`` replaces perf_analyzer by threads that send, all at once, a mix of good videos,
broken files (random bytes, a cut mp4, text) as large as the byte limit allows, and oversize
files (over ``max_bytes``; the server must refuse them with ``max_bytes``). Memory (RSS and PSS of
the tree, and the /dev/shm regions it maps) is taken after a warm-up round that sends every file
once, during the run and at the end: refused uploads must not pile up in the server (the exit
status checks the first quarter of the run against the last). Its own server gets
``--hostile-max-mb`` as its byte limit, so that "oversize" stays a few tens of MB.

Loopback only: the script refuses a server address that is not 127.0.0.1 / ::1 / localhost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")

MODES = {
    # concurrencies, seconds per concurrency, perf_analyzer window (ms), memory sample period (s)
    "short": dict(concurrency=(1, 2), seconds=22.0, window_ms=2000, sample_s=0.5),
    "long": dict(concurrency=(1, 2, 4, 8), seconds=60.0, window_ms=4000, sample_s=1.0),
}


# ---- memory of the server's process tree ---------------------------------------------------------
def tree_memory(pid: int) -> dict[str, int]:
    """RSS, PSS and /dev/shm bytes of ``pid`` and all its descendants
    (:func:`vidcls.launcher.process_memory`: why RSS over-states and PSS does not)."""
    from vidcls.launcher import process_memory

    return process_memory(pid)


class MemorySampler(threading.Thread):
    def __init__(self, pid: int, period_s: float):
        super().__init__(daemon=True)
        self.pid, self.period_s = pid, period_s
        self.samples: list[dict] = []
        self.label = "start"
        self._halt = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.period_s)

    def sample(self) -> dict:
        m = tree_memory(self.pid)
        m.update(t=round(time.monotonic() - self.t0, 2), phase=self.label)
        self.samples.append(m)
        return m

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


# ---- server statistics ----------------------------------------------------------------------------
def request_counts(url: str, admin_key: str | None) -> dict[str, dict[str, int]]:
    """{model: {success, fail}} from Triton's statistics API (cumulative counters)."""
    from vidcls.client.stats import fetch_statistics

    out = {}
    for m in fetch_statistics(url, admin_key=admin_key).get("model_stats", []):
        inf = m.get("inference_stats", {})
        out[m["name"]] = {k: int((inf.get(k) or {}).get("count", 0) or 0) for k in ("success", "fail")}
    return out


def _delta(before: dict, after: dict) -> dict[str, dict[str, int]]:
    return {name: {k: v[k] - before.get(name, {}).get(k, 0) for k in v} for name, v in after.items()}


# ---- perf_analyzer ----------------------------------------------------------------------------------
@dataclass
class Level:
    concurrency: int
    seconds: float = 0.0
    runs: int = 0
    perf_errors: list[str] = field(default_factory=list)
    throughput: list[float] = field(default_factory=list)  # inferences/s per run
    p50_ms: list[float] = field(default_factory=list)
    p95_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    requests: int = 0
    failures: int = 0
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0

    def summary(self) -> dict:
        med = lambda xs: round(statistics.median(xs), 1) if xs else None  # noqa: E731
        return {"concurrency": self.concurrency, "seconds": round(self.seconds, 1), "runs": self.runs,
                "requests": self.requests, "failures": self.failures, "perf_errors": len(self.perf_errors),
                "throughput_per_s": round(statistics.mean(self.throughput), 2) if self.throughput else None,
                "p50_ms": med(self.p50_ms), "p95_ms": med(self.p95_ms),
                # The worst window's p99: a soak reports the bad tail, not its median.
                "p99_ms": round(max(self.p99_ms), 1) if self.p99_ms else None,
                "rss_start_mb": round(self.rss_start_mb, 1), "rss_end_mb": round(self.rss_end_mb, 1)}


def run_level(binary: Path, env: dict, url: str, model: str, input_json: Path, level: Level, seconds: float,
              window_ms: int, work: Path, tag: str = "", admin_key: str | None = None) -> None:
    """perf_analyzer at one concurrency, run after run, until ``seconds`` are spent.

    Each run measures three windows (a stability threshold of 1000% accepts the first three), so
    one run takes about 3 windows plus its warm-up, and the level's wall time is bounded.
    """
    from vidcls.client.perf import PerfError, PerfOptions, build_command, read_perf_csv, run_perf_analyzer

    from vidcls.config import VidclsConfig

    # The same few files again and again: with the answer cache the pipeline would run once each.
    no_cache = [(VidclsConfig().serving.cache_parameter, "false", "bool")]
    opts = PerfOptions(model=model, url=url, concurrency_range=str(level.concurrency), measurement_interval_ms=window_ms,
                       stability_percentage=1000.0, max_trials=3, parameters=no_cache, extra=["--async"],
                       admin_key=admin_key)  # perf_analyzer reads the statistics API
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        csv_path = work / f"{tag}c{level.concurrency}_run{level.runs}.csv"
        log_path = csv_path.with_suffix(".log")
        try:
            run_perf_analyzer(build_command(binary, opts, input_json, csv_path), env, log_path,
                              timeout=max(60.0, 10 * window_ms / 1000))
            row = read_perf_csv(csv_path)[0]
            level.throughput.append(float(row.get("Inferences/Second", 0.0)))
            for key, name in (("p50_ms", "p50 latency"), ("p95_ms", "p95 latency"), ("p99_ms", "p99 latency")):
                if name in row:
                    getattr(level, key).append(float(row[name]) / 1000.0)  # µs → ms
        except PerfError as exc:
            level.perf_errors.append(str(exc)[-2000:])
        level.runs += 1
    level.seconds = time.monotonic() - start


# ---- inputs and a server of our own -------------------------------------------------------------------
def make_videos(out: Path, count: int = 4) -> list[Path]:
    """Short real H.264 and VP9 clips of a few sizes (shorter and longer than T frames)."""
    import numpy as np

    from vidcls.video import encode_video

    out.mkdir(parents=True, exist_ok=True)
    specs = [("libx264", ".mp4", 40, (160, 120)), ("libvpx-vp9", ".webm", 30, (176, 144)),
             ("libx264", ".mp4", 90, (128, 96)), ("libx264", ".mp4", 12, (96, 64))][:count]
    paths = []
    for i, (codec, ext, n, (w, h)) in enumerate(specs):
        path = out / f"soak_{i}{ext}"
        if not path.exists():
            rng = np.random.default_rng(i)
            base = (rng.random((h, w, 3)) * 200).astype(np.uint8)
            frames = (np.roll(base, 3 * k, axis=1) for k in range(n))
            options = {"deadline": "realtime", "cpu-used": "8"} if codec == "libvpx-vp9" else None
            encode_video(path, frames, codec=codec, options=options)
        paths.append(path)
    return paths


def build_repo(work: Path, preset: str, max_bytes: int | None = None) -> Path:
    import dataclasses

    import torch

    from vidcls.checkpoint import save_model
    from vidcls.config import VidclsConfig
    from vidcls.export.repository import build_repository
    from vidcls.models.temporal import SuperEnhancedTemporalModel

    repo = work / (f"repo_{preset}" + (f"_max{max_bytes}" if max_bytes else ""))
    if (repo / "vidcls_config.json").exists():
        return repo
    config = (VidclsConfig.tiny(num_models=2) if preset == "tiny" else VidclsConfig.demo())
    ckpts = work / f"checkpoints_{preset}"
    if not (ckpts / "model_0").exists():
        for i, seed in enumerate(config.model_seeds):
            torch.manual_seed(seed)
            save_model(ckpts / f"model_{i}", SuperEnhancedTemporalModel(config.temporal).eval(), config,
                       meta={"seed": seed, "backbone_weights": "none"})
    if max_bytes:
        config = config.replace(limits=dataclasses.replace(config.limits, max_bytes=max_bytes))
    return build_repository(ckpts, repo, target="cpu", config=config)


def check_loopback(url: str) -> None:
    host = url.rsplit(":", 1)[0]
    if host not in LOOPBACK:
        raise SystemExit(f"soak runs against a loopback server only, not {host!r}")


# ---- the soak ------------------------------------------------------------------------------------------
def soak(url: str, pid: int, videos: Sequence[Path], concurrency: Sequence[int], seconds: float, window_ms: int,
         sample_s: float, out: Path, model: str, input_name: str, admin_key: str | None = None) -> dict:
    from vidcls.client.perf import find_perf_analyzer, perf_environment, write_input_data

    check_loopback(url)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "perf"
    work.mkdir(exist_ok=True)
    binary = find_perf_analyzer()
    env = perf_environment(binary)
    input_json = work / "input_data.json"
    inputs = write_input_data(videos, input_json, input_name)

    sampler = MemorySampler(pid, sample_s)
    sampler.sample()
    sampler.start()
    counts0 = request_counts(url, admin_key)
    # Warm-up: every python stub has imported its libraries and sized its buffers, ORT sessions
    # have run once. Growth is measured from after this point.
    sampler.label = "warmup"
    warm = Level(concurrency=max(concurrency))
    run_level(binary, env, url, model, input_json, warm, seconds=1.0, window_ms=min(window_ms, 2000), work=work,
              tag="warmup_", admin_key=admin_key)
    baseline = sampler.sample()
    t_start = time.monotonic()
    levels = []
    for c in concurrency:
        sampler.label = f"c{c}"
        level = Level(concurrency=c)
        before = request_counts(url, admin_key)
        level.rss_start_mb = sampler.sample()["rss"] / 2**20
        run_level(binary, env, url, model, input_json, level, seconds, window_ms, work, admin_key=admin_key)
        level.rss_end_mb = sampler.sample()["rss"] / 2**20
        d = _delta(before, request_counts(url, admin_key))
        level.requests = d.get(model, {}).get("success", 0) + d.get(model, {}).get("fail", 0)
        level.failures = sum(v["fail"] for v in d.values())
        levels.append(level)
    elapsed = time.monotonic() - t_start
    sampler.label = "end"
    end = sampler.sample()
    sampler.stop()
    total = _delta(counts0, request_counts(url, admin_key))

    after_warm = [s for s in sampler.samples if s["phase"] not in ("start", "warmup")]
    peak = max(after_warm, key=lambda s: s["rss"])
    # Growth from the first to the last quarter of the run (means, so one sample's noise does
    # not decide), and end minus start.
    q = max(1, len(after_warm) // 4)
    first_q = statistics.mean(s["rss"] for s in after_warm[:q])
    last_q = statistics.mean(s["rss"] for s in after_warm[-q:])
    mb = lambda b: round(b / 2**20, 1)  # noqa: E731
    result = {
        "url": url, "model": model, "server_pid": pid, "inputs": inputs,
        "videos": [Path(v).name for v in videos],
        "concurrency": list(concurrency), "seconds_per_level": seconds, "window_ms": window_ms,
        "duration_s": round(elapsed, 1),
        "requests": sum(lv.requests for lv in levels),
        "requests_incl_warmup": total.get(model, {}).get("success", 0) + total.get(model, {}).get("fail", 0),
        "failures": sum(v["fail"] for v in total.values()),
        "failures_by_model": {k: v["fail"] for k, v in total.items() if v["fail"]},
        "perf_analyzer_errors": sum(len(lv.perf_errors) for lv in levels) + len(warm.perf_errors),
        "perf_analyzer_error_tails": [e for lv in [warm, *levels] for e in lv.perf_errors][:3],
        "memory": {
            "processes": end["processes"],
            "rss_baseline_mb": mb(baseline["rss"]), "rss_end_mb": mb(end["rss"]), "rss_peak_mb": mb(peak["rss"]),
            "rss_growth_mb": mb(end["rss"] - baseline["rss"]),
            "rss_growth_quartiles_mb": mb(last_q - first_q),
            "rss_growth_pct": round(100.0 * (end["rss"] - baseline["rss"]) / baseline["rss"], 2),
            "pss_baseline_mb": mb(baseline["pss"]), "pss_end_mb": mb(end["pss"]),
            "pss_growth_mb": mb(end["pss"] - baseline["pss"]),
        },
        "p99_ms": max((lv.summary()["p99_ms"] or 0.0) for lv in levels) if levels else None,
        "levels": [lv.summary() for lv in levels],
        "samples": sampler.samples,
    }
    (out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "soak.md").write_text(markdown(result))
    return result


# ---- hostile mix: good, broken and oversize uploads at once --------------------------------------
HOSTILE_MODES = {
    # seconds of sending, threads (requests in flight), memory sample period (s)
    "short": dict(seconds=30.0, concurrency=4, sample_s=0.5),
    "long": dict(seconds=180.0, concurrency=6, sample_s=1.0),
}


def make_hostile_inputs(out: Path, videos: Sequence[Path], max_bytes: int) -> list[tuple[str, Path]]:
    """(kind, file) pairs: the good videos; broken files just under ``max_bytes`` (random bytes, an
    mp4 cut in half and padded with random bytes, text); oversize files (random bytes and a valid
    video padded past ``max_bytes``)."""
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    big = int(max_bytes * 0.9)
    over = int(max_bytes * 1.5)
    good = Path(videos[0]).read_bytes()
    specs = {
        "broken_random.bin": lambda: rng.integers(0, 256, big, dtype=np.uint8).tobytes(),
        "broken_cut.mp4": lambda: good[: len(good) // 2] + rng.integers(0, 256, big, dtype=np.uint8).tobytes(),
        "broken_text.txt": lambda: (b"not a video, just words. " * (big // 25 + 1))[:big],
        "oversize_random.bin": lambda: rng.integers(0, 256, over, dtype=np.uint8).tobytes(),
        "oversize_padded.mp4": lambda: good + bytes(over - len(good)),
    }
    files = [("good", Path(v)) for v in videos]
    for name, make in specs.items():
        path = out / f"{max_bytes}_{name}"
        if not path.exists():
            path.write_bytes(make())
        files.append(("oversize" if name.startswith("oversize") else "broken", path))
    return files


def _expected(kind: str, error) -> bool:
    """Whether a request's outcome is the right one for its kind of file."""
    if kind == "good":
        return error is None
    if error is None:
        return False
    message = error.message() if hasattr(error, "message") else str(error)
    if kind == "oversize":
        return "max_bytes:" in message
    return "StatusCode.INVALID_ARGUMENT" in str(error.status() if hasattr(error, "status") else "") \
        or any(f"{code}:" in message for code in ("not_a_video", "corrupt", "no_frames", "container"))


def hostile_soak(url: str, pid: int, files: Sequence[tuple[str, Path]], seconds: float, concurrency: int,
                 sample_s: float, out: Path, model: str, input_name: str) -> dict:
    import random

    import numpy as np
    import tritonclient.grpc as grpcclient

    check_loopback(url)
    out.mkdir(parents=True, exist_ok=True)
    payloads = [(kind, path.name, np.frombuffer(path.read_bytes(), np.uint8)[None]) for kind, path in files]
    lock = threading.Lock()
    counts: dict[str, dict[str, int]] = {}
    unexpected: list[str] = []

    def send(client, kind: str, name: str, data) -> None:
        inp = grpcclient.InferInput(input_name, list(data.shape), "UINT8")
        inp.set_data_from_numpy(data)
        error = None
        try:
            client.infer(model, [inp], client_timeout=300)
        except Exception as exc:
            error = exc
        ok = _expected(kind, error)
        with lock:
            c = counts.setdefault(kind, {"requests": 0, "as_expected": 0})
            c["requests"] += 1
            c["as_expected"] += int(ok)
            if not ok and len(unexpected) < 20:
                unexpected.append(f"{name}: {error if error is not None else 'a result'}")

    sampler = MemorySampler(pid, sample_s)
    sampler.sample()
    sampler.start()
    sampler.label = "warmup"
    warm = threading.Barrier(concurrency + 1)
    go = threading.Event()
    state = {"deadline": 0.0}

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        with grpcclient.InferenceServerClient(url) as client:
            # The warm-up round: every thread sends every file once, at the concurrency of the run,
            # so the python backend's regions have grown to the batches this load forms.
            for kind, name, data in rnd.sample(payloads, len(payloads)):
                send(client, kind, name, data)
            warm.wait()
            go.wait()
            while time.monotonic() < state["deadline"]:
                kind, name, data = rnd.choice(payloads)
                send(client, kind, name, data)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    warm.wait()
    time.sleep(2 * sample_s)  # the warm-up's last answers have released their buffers
    warm_counts = {k: dict(v) for k, v in counts.items()}
    baseline = sampler.sample()
    sampler.label = "hostile"
    t0 = time.monotonic()
    state["deadline"] = t0 + seconds
    go.set()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    time.sleep(2 * sample_s)  # the last answers have released their buffers
    sampler.label = "end"
    end = sampler.sample()
    sampler.stop()
    after = [s for s in sampler.samples if s["phase"] in ("hostile", "end")]
    # Does memory keep growing with the requests, or hold a level set by the load? The mean of the
    # first quarter of the run against the last quarter answers that (end vs warm-up also counts
    # what the load itself keeps: buffers sized for several uploads in flight at once).
    q = max(1, len(after) // 4)
    first_q = {k: statistics.mean(s[k] for s in after[:q]) for k in ("rss", "shm")}
    last_q = {k: statistics.mean(s[k] for s in after[-q:]) for k in ("rss", "shm")}
    mb = lambda b: round(b / 2**20, 1)  # noqa: E731
    pct = lambda a, b: round(100.0 * (b - a) / a, 2) if a else None  # noqa: E731
    totals = {k: {"requests": v["requests"] - warm_counts.get(k, {}).get("requests", 0),
                  "as_expected": v["as_expected"] - warm_counts.get(k, {}).get("as_expected", 0)}
              for k, v in counts.items()}
    result = {
        "url": url, "model": model, "server_pid": pid, "mode": "hostile",
        "files": [{"kind": k, "name": p.name, "mb": mb(p.stat().st_size)} for k, p in files],
        "concurrency": concurrency, "duration_s": round(elapsed, 1),
        "requests": sum(v["requests"] for v in totals.values()),
        "by_kind": totals, "warmup_by_kind": warm_counts, "unexpected": unexpected,
        "memory": {
            "processes": end["processes"],
            "rss_baseline_mb": mb(baseline["rss"]), "rss_end_mb": mb(end["rss"]),
            "rss_peak_mb": mb(max(s["rss"] for s in after)),
            "rss_growth_mb": mb(end["rss"] - baseline["rss"]), "rss_growth_pct": pct(baseline["rss"], end["rss"]),
            "pss_baseline_mb": mb(baseline["pss"]), "pss_end_mb": mb(end["pss"]),
            "shm_baseline_mb": mb(baseline["shm"]), "shm_end_mb": mb(end["shm"]),
            "shm_growth_pct": pct(baseline["shm"], end["shm"]),
            "rss_first_quarter_mb": mb(first_q["rss"]), "rss_last_quarter_mb": mb(last_q["rss"]),
            "rss_quartile_growth_pct": pct(first_q["rss"], last_q["rss"]),
            "shm_quartile_growth_pct": pct(first_q["shm"], last_q["shm"]),
        },
        "samples": sampler.samples,
    }
    (out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "soak.md").write_text(hostile_markdown(result))
    return result


def hostile_markdown(r: dict) -> str:
    m = r["memory"]
    kinds = ", ".join(f"{k} {v['requests']} ({v['as_expected']} as expected)" for k, v in sorted(r["by_kind"].items()))
    sizes = ", ".join(f"{f['name']} {f['mb']} MB" for f in r["files"] if f["kind"] != "good")
    return "\n".join([
        f"Hostile soak: {r['duration_s']:.0f} s, {r['concurrency']} requests in flight, loopback gRPC; "
        f"good videos mixed with {sizes}.",
        "",
        f"- requests: **{r['requests']}** ({kinds}); unexpected outcomes: **{len(r['unexpected'])}**",
        f"- server memory (tritonserver + {m['processes'] - 1} python stubs) after a warm-up round -> end: "
        f"RSS {m['rss_baseline_mb']} -> {m['rss_end_mb']} MB ({m['rss_growth_pct']:+}%; peak {m['rss_peak_mb']} MB), "
        f"PSS {m['pss_baseline_mb']} -> {m['pss_end_mb']} MB, /dev/shm {m['shm_baseline_mb']} -> {m['shm_end_mb']} MB",
        f"- during the run, first quarter -> last quarter (mean): RSS {m['rss_first_quarter_mb']} -> "
        f"{m['rss_last_quarter_mb']} MB ({m['rss_quartile_growth_pct']:+}%), /dev/shm {m['shm_quartile_growth_pct']:+}%",
    ]) + "\n"


def markdown(r: dict) -> str:
    m = r["memory"]
    lines = [
        f"Soak: {r['duration_s']:.0f} s of perf_analyzer on `{r['model']}` at concurrency "
        f"{', '.join(map(str, r['concurrency']))} ({r['seconds_per_level']:.0f} s each), "
        f"{r['inputs']['videos']} real videos, loopback gRPC.",
        "",
        f"- requests: **{r['requests']}**, failed: **{r['failures']}** (Triton statistics, every model); "
        f"perf_analyzer errors: {r['perf_analyzer_errors']}",
        f"- server memory (tritonserver + {m['processes'] - 1} python stubs), RSS: {m['rss_baseline_mb']} MB after "
        f"warm-up → {m['rss_end_mb']} MB at the end (growth {m['rss_growth_mb']:+} MB, {m['rss_growth_pct']:+}%; "
        f"peak {m['rss_peak_mb']} MB); PSS {m['pss_baseline_mb']} → {m['pss_end_mb']} MB",
        f"- worst p99 latency: {r['p99_ms']} ms",
        "",
        "| concurrency | requests | failed | videos/s | p50 ms | p95 ms | p99 ms | RSS start → end MB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for lv in r["levels"]:
        lines.append(f"| {lv['concurrency']} | {lv['requests']} | {lv['failures']} | {lv['throughput_per_s']} | "
                     f"{lv['p50_ms']} | {lv['p95_ms']} | {lv['p99_ms']} | {lv['rss_start_mb']} → {lv['rss_end_mb']} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--short", action="store_const", dest="mode", const="short", help="about a minute (tests)")
    mode.add_argument("--long", action="store_const", dest="mode", const="long", help="a few minutes (README)")
    p.add_argument("--url", help="gRPC address of a running loopback server (else start our own)")
    p.add_argument("--pid", type=int, help="that server's PID (its process tree is measured)")
    p.add_argument("--admin-key-file", type=Path,
                   help="that server's operator key (statistics); default: $VIDCLS_ADMIN_KEY, else the local key file")
    p.add_argument("--repo", type=Path, help="model repository for our own server (default: build one)")
    p.add_argument("--preset", choices=["tiny", "demo"], default="tiny", help="models of the built repository")
    p.add_argument("--concurrency", help="comma list, overrides the mode's")
    p.add_argument("--seconds-per-level", type=float, help="overrides the mode's")
    p.add_argument("--videos", nargs="*", type=Path, help="video files (default: generated clips)")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "vidcls-soak")
    p.add_argument("--out", type=Path, default=Path("runs") / "soak")
    p.add_argument("--max-rss-growth-mb", type=float, default=256.0,
                   help="exit 1 if the process tree's RSS grows more than this after warm-up")
    p.add_argument("--hostile", action="store_true",
                   help="good, broken and oversize uploads at once instead of perf_analyzer (see above)")
    p.add_argument("--hostile-max-mb", type=float, default=24.0,
                   help="--hostile: the byte limit of our own server, and the size the broken/oversize files "
                        "are made from (with --url: the served max_bytes, in MiB)")
    p.add_argument("--max-growth-pct", type=float, default=10.0,
                   help="--hostile: exit 1 if RSS or /dev/shm grows more than this from the first to the last "
                        "quarter of the run")
    args = p.parse_args(argv)
    m = dict(MODES[args.mode or "short"])
    if args.concurrency:
        m["concurrency"] = tuple(int(c) for c in args.concurrency.split(","))
    if args.seconds_per_level:
        m["seconds"] = args.seconds_per_level
    if bool(args.url) != bool(args.pid):
        p.error("--url and --pid go together")

    from vidcls.config import VidclsConfig

    args.work.mkdir(parents=True, exist_ok=True)
    videos = args.videos or make_videos(args.work / "videos")
    names = VidclsConfig().serving
    max_bytes = int(args.hostile_max_mb * 2**20) if args.hostile else None
    server = None
    try:
        if args.url:
            from vidcls.admin_access import client_key

            url, pid, key = args.url, args.pid, client_key(args.admin_key_file, [args.url])
        else:
            from vidcls.launcher import TritonServer

            repo = args.repo or build_repo(args.work, args.preset, max_bytes)
            server = TritonServer(repo, log_path=args.out / "tritonserver.log").start()
            url, pid, key = server.grpc_url, server.pid, server.admin_key
            print(f"server on {url} (pid {pid})", flush=True)
        if args.hostile:
            h = dict(HOSTILE_MODES[args.mode or "short"])
            if args.seconds_per_level:
                h["seconds"] = args.seconds_per_level
            if args.concurrency:
                h["concurrency"] = int(args.concurrency.split(",")[-1])
            files = make_hostile_inputs(args.work / "hostile", videos, max_bytes)
            result = hostile_soak(url, pid, files, h["seconds"], h["concurrency"], h["sample_s"], args.out,
                                  names.ensemble, names.video)
        else:
            result = soak(url, pid, videos, m["concurrency"], m["seconds"], m["window_ms"], m["sample_s"], args.out,
                          names.ensemble, names.video, key)
    finally:
        if server is not None:
            server.stop()
    print(f"wrote {args.out / 'soak.json'} and {args.out / 'soak.md'}")
    if args.hostile:
        print(hostile_markdown(result))
        mem = result["memory"]
        ok = result["requests"] > 0 and not result["unexpected"] \
            and mem["rss_quartile_growth_pct"] <= args.max_growth_pct \
            and (mem["shm_quartile_growth_pct"] or 0.0) <= args.max_growth_pct
        return 0 if ok else 1
    print(markdown(result))
    ok = result["failures"] == 0 and result["perf_analyzer_errors"] == 0 and result["requests"] > 0 \
        and result["memory"]["rss_growth_mb"] <= args.max_rss_growth_mb
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
