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

Loopback only: the script refuses a server address that is not 127.0.0.1 / ::1 / localhost.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
PAGE = os.sysconf("SC_PAGE_SIZE")

MODES = {
    # concurrencies, seconds per concurrency, perf_analyzer window (ms), memory sample period (s)
    "short": dict(concurrency=(1, 2), seconds=22.0, window_ms=2000, sample_s=0.5),
    "long": dict(concurrency=(1, 2, 4, 8), seconds=60.0, window_ms=4000, sample_s=1.0),
}


# ---- memory of a process tree, from /proc ----------------------------------------------------------
def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        # The command name may hold spaces and parentheses: fields start after the last ')'.
        ppid = int(stat[stat.rfind(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def process_tree(pid: int) -> list[int]:
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def tree_memory(pid: int) -> dict[str, int]:
    """Summed RSS and PSS (bytes) of ``pid`` and all its descendants.

    RSS counts a shared page in every process that maps it (the python backend's /dev/shm region
    is mapped by the server and each stub), so the RSS sum over-states the total; PSS divides
    shared pages among their users and is the honest total. Both are recorded.
    """
    rss = pss = n = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/statm") as f:
                rss += int(f.read().split()[1]) * PAGE
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
                        break
            n += 1
        except (OSError, ValueError, IndexError):
            continue
    return {"rss": rss, "pss": pss, "processes": n}


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
def request_counts(url: str) -> dict[str, dict[str, int]]:
    """{model: {success, fail}} from Triton's statistics API (cumulative counters)."""
    from vidcls.client.stats import fetch_statistics

    out = {}
    for m in fetch_statistics(url).get("model_stats", []):
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
              window_ms: int, work: Path, tag: str = "") -> None:
    """perf_analyzer at one concurrency, run after run, until ``seconds`` are spent.

    Each run measures three windows (a stability threshold of 1000% accepts the first three), so
    one run takes about 3 windows plus its warm-up, and the level's wall time is bounded.
    """
    from vidcls.client.perf import PerfError, PerfOptions, build_command, read_perf_csv, run_perf_analyzer

    from vidcls.config import VidclsConfig

    # The same few files again and again: with the answer cache the pipeline would run once each.
    no_cache = [(VidclsConfig().serving.cache_parameter, "false", "bool")]
    opts = PerfOptions(model=model, url=url, concurrency_range=str(level.concurrency), measurement_interval_ms=window_ms,
                       stability_percentage=1000.0, max_trials=3, parameters=no_cache, extra=["--async"])
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


def build_repo(work: Path, preset: str) -> Path:
    import torch

    from vidcls.checkpoint import save_model
    from vidcls.config import VidclsConfig
    from vidcls.export.repository import build_repository
    from vidcls.models.temporal import SuperEnhancedTemporalModel

    repo = work / f"repo_{preset}"
    if (repo / "vidcls_config.json").exists():
        return repo
    config = (VidclsConfig.tiny(num_models=2) if preset == "tiny" else VidclsConfig.demo())
    ckpts = work / f"checkpoints_{preset}"
    for i, seed in enumerate(config.model_seeds):
        torch.manual_seed(seed)
        save_model(ckpts / f"model_{i}", SuperEnhancedTemporalModel(config.temporal).eval(), config,
                   meta={"seed": seed, "backbone_weights": "none"})
    return build_repository(ckpts, repo, target="cpu")


def check_loopback(url: str) -> None:
    host = url.rsplit(":", 1)[0]
    if host not in LOOPBACK:
        raise SystemExit(f"soak runs against a loopback server only, not {host!r}")


# ---- the soak ------------------------------------------------------------------------------------------
def soak(url: str, pid: int, videos: Sequence[Path], concurrency: Sequence[int], seconds: float, window_ms: int,
         sample_s: float, out: Path, model: str, input_name: str) -> dict:
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
    counts0 = request_counts(url)
    # Warm-up: every python stub has imported its libraries and sized its buffers, ORT sessions
    # have run once. Growth is measured from after this point.
    sampler.label = "warmup"
    warm = Level(concurrency=max(concurrency))
    run_level(binary, env, url, model, input_json, warm, seconds=1.0, window_ms=min(window_ms, 2000), work=work,
              tag="warmup_")
    baseline = sampler.sample()
    t_start = time.monotonic()
    levels = []
    for c in concurrency:
        sampler.label = f"c{c}"
        level = Level(concurrency=c)
        before = request_counts(url)
        level.rss_start_mb = sampler.sample()["rss"] / 2**20
        run_level(binary, env, url, model, input_json, level, seconds, window_ms, work)
        level.rss_end_mb = sampler.sample()["rss"] / 2**20
        d = _delta(before, request_counts(url))
        level.requests = d.get(model, {}).get("success", 0) + d.get(model, {}).get("fail", 0)
        level.failures = sum(v["fail"] for v in d.values())
        levels.append(level)
    elapsed = time.monotonic() - t_start
    sampler.label = "end"
    end = sampler.sample()
    sampler.stop()
    total = _delta(counts0, request_counts(url))

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
    p.add_argument("--repo", type=Path, help="model repository for our own server (default: build one)")
    p.add_argument("--preset", choices=["tiny", "demo"], default="tiny", help="models of the built repository")
    p.add_argument("--concurrency", help="comma list, overrides the mode's")
    p.add_argument("--seconds-per-level", type=float, help="overrides the mode's")
    p.add_argument("--videos", nargs="*", type=Path, help="video files (default: generated clips)")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "vidcls-soak")
    p.add_argument("--out", type=Path, default=Path("runs") / "soak")
    p.add_argument("--max-rss-growth-mb", type=float, default=256.0,
                   help="exit 1 if the process tree's RSS grows more than this after warm-up")
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
    server = None
    try:
        if args.url:
            url, pid = args.url, args.pid
        else:
            from vidcls.launcher import TritonServer

            repo = args.repo or build_repo(args.work, args.preset)
            server = TritonServer(repo, log_path=args.out / "tritonserver.log").start()
            url, pid = server.grpc_url, server.pid
            print(f"server on {url} (pid {pid})", flush=True)
        result = soak(url, pid, videos, m["concurrency"], m["seconds"], m["window_ms"], m["sample_s"], args.out,
                      names.ensemble, names.video)
    finally:
        if server is not None:
            server.stop()
    print(markdown(result))
    print(f"wrote {args.out / 'soak.json'} and {args.out / 'soak.md'}")
    ok = result["failures"] == 0 and result["perf_analyzer_errors"] == 0 and result["requests"] > 0 \
        and result["memory"]["rss_growth_mb"] <= args.max_rss_growth_mb
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
