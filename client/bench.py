"""``vidcls bench --url HOST:PORT VIDEOS...``: a perf_analyzer concurrency sweep on real videos.

Writes into ``--out``: ``inputs.json`` (perf_analyzer --input-data made from the videos),
``perf.csv`` (perf_analyzer's own CSV, --verbose-csv), ``perf_analyzer.log``, ``bench.png``
(throughput and p50/p95/p99 latency against concurrency), ``server_stats.json`` (per-model
statistics over the sweep) and ``summary.md`` (both tables and the bottleneck step).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from vidcls import admin_access
from vidcls.arguments import address, existing_path, positive_int
from vidcls.client.classify import DEFAULT_URL
from vidcls.client.perf import (PerfError, PerfOptions, build_command, find_perf_analyzer, perf_environment,
                                read_perf_csv, run_perf_analyzer, write_input_data)
from vidcls.client.request import TLSOptions, make_client, server_problem
from vidcls.client.stats import bottleneck, diff_statistics, fetch_statistics, markdown_table
from vidcls.config import VidclsConfig
from vidcls.errors import UsageError, VidclsError
from vidcls.inputs import collect_inputs

LATENCIES = (("p50", "p50 latency"), ("p95", "p95 latency"), ("p99", "p99 latency"))


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conc = [r["Concurrency"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(conc, [r["Inferences/Second"] for r in rows], marker="o")
    ax1.set_xlabel("concurrency (requests in flight)")
    ax1.set_ylabel("throughput (videos/s)")
    ax1.set_title("throughput")
    ax1.set_ylim(bottom=0)
    for label, col in LATENCIES:
        ax2.plot(conc, [r[col] / 1000.0 for r in rows], marker="o", label=label)
    ax2.set_xlabel("concurrency (requests in flight)")
    ax2.set_ylabel("latency (ms)")
    ax2.set_title("client latency")
    ax2.set_ylim(bottom=0)
    ax2.legend()
    for ax in (ax1, ax2):
        ax.set_xticks(conc)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def perf_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| concurrency | videos/s | p50 ms | p95 ms | p99 ms | avg ms | server queue ms | server compute ms |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        compute = sum(r.get(k, 0.0) or 0.0 for k in ("Server Compute Input", "Server Compute Infer",
                                                     "Server Compute Output"))
        lines.append(f"| {int(r['Concurrency'])} | {r['Inferences/Second']:.2f} | "
                     + " | ".join(f"{r[c] / 1000:.1f}" for _, c in LATENCIES)
                     + f" | {r.get('Avg latency', 0) / 1000:.1f} | {r.get('Server Queue', 0) / 1000:.1f} | "
                       f"{compute / 1000:.1f} |")
    return "\n".join(lines)


def summary_markdown(rows, steps, meta: dict[str, Any]) -> str:
    best = max(rows, key=lambda r: r["Inferences/Second"])
    neck = bottleneck(steps)
    parts = [
        f"# vidcls bench: {meta['model']} at {meta['url']}",
        "",
        f"- {meta['videos']} videos ({meta['bytes'] / 1e6:.2f} MB) as perf_analyzer input data; "
        f"concurrency {meta['concurrency_range']}, {meta['measurement']}",
        f"- client machine: {meta['machine']}; measured {meta['date']}",
        f"- best throughput: {best['Inferences/Second']:.2f} videos/s at concurrency {int(best['Concurrency'])} "
        f"(p99 {best['p99 latency'] / 1000:.0f} ms)",
    ]
    if neck is not None:
        parts.append(f"- bottleneck: `{neck.model}` — {neck.busy_s:.1f} s of compute in a {meta['window_s']:.0f} s "
                     f"sweep ({100 * neck.busy_share:.0f}% busy), {neck.compute_ms:.1f} ms/request, "
                     f"queue {neck.queue_ms:.1f} ms/request, average batch {neck.avg_batch:.2f}")
    parts += ["", "## Client side (perf_analyzer; latencies in ms)", "", perf_table(rows), "",
              "## Server side per model (Triton statistics API, over the whole sweep)", "",
              markdown_table(steps) if steps else "(no statistics: the statistics API was not reachable)", "",
              "avg batch = requests / executions (dynamic batching); busy = compute time summed over executions, "
              "as a share of the sweep's wall time (100% = one model instance always busy).", "",
              "Files: perf.csv (perf_analyzer), bench.png, server_stats.json, perf_analyzer.log.", ""]
    return "\n".join(parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    serving = VidclsConfig().serving
    d = PerfOptions(model=serving.ensemble, url=DEFAULT_URL)  # the defaults are the dataclass's
    parser.add_argument("videos", nargs="+", metavar="VIDEO", type=existing_path,
                        help="video files or folders (input data)")
    parser.add_argument("-u", "--url", default=d.url, type=address, help="Triton gRPC endpoint (HOST:PORT)")
    parser.add_argument("-m", "--model", default=d.model, help="model (the ensemble) to measure")
    parser.add_argument("--model-version", default=d.model_version, help="model version (default: the server's policy)")
    parser.add_argument("-o", "--out", default="bench_out", help="output folder")
    parser.add_argument("--concurrency-range", default=d.concurrency_range, help="START:END[:STEP] requests in flight")
    parser.add_argument("--measurement-mode", default=d.measurement_mode, choices=["time_windows", "count_windows"],
                        help="perf_analyzer's windows: fixed time, or a fixed number of requests")
    parser.add_argument("--measurement-interval", type=positive_int, default=d.measurement_interval_ms,
                        help="window in ms (time_windows); longer windows measure a busy machine more steadily")
    parser.add_argument("--measurement-request-count", type=positive_int, default=d.measurement_request_count,
                        help="requests a window (count_windows)")
    parser.add_argument("--stability-percentage", type=float, default=d.stability_percentage,
                        help="how much (%%) throughput and latency may vary between windows for a measurement "
                             "to count as stable; raise it on a busy machine")
    parser.add_argument("--max-trials", type=positive_int, default=d.max_trials,
                        help="windows per concurrency before giving up on stability")
    parser.add_argument("--max-videos", type=positive_int, default=16, help="at most this many videos in the input data")
    parser.add_argument("--shared-memory", default=d.shared_memory, choices=["none", "system"],
                        help="how perf_analyzer hands inputs to the server (system: client and server on one host)")
    parser.add_argument("--perf-analyzer", default=None,
                        help="perf_analyzer binary or its venv (default: .tools/perf from 'make tools', then PATH)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before perf_analyzer is stopped")
    tls = parser.add_argument_group("gRPC TLS")
    tls.add_argument("--ssl", action="store_true", help="connect with TLS")
    tls.add_argument("--root-cert", help="PEM CA certificate(s) to verify the server with")
    tls.add_argument("--client-cert", help="PEM client certificate (mutual TLS)")
    tls.add_argument("--client-key", help="PEM client private key (mutual TLS)")
    parser.add_argument("--answer-cache", action="store_true",
                        help="let the server answer repeated files from its answer cache (default: every request "
                             "runs the pipeline, since the input data repeats a few files)")
    parser.add_argument("--perf-args", default="", help="further perf_analyzer options, one quoted string")
    parser.add_argument("--admin-key-file", metavar="FILE",
                        help="the server's operator key: perf_analyzer reads the statistics API (and registers shared "
                             f"memory) (default: ${admin_access.ENV_KEY}, else the key file of 'vidcls serve' on this "
                             "host for a local --url)")


def _check_server(url: str, tls: TLSOptions, key: str | None, shared_memory: bool) -> None:
    """A server must answer before the sweep, and let this client use what perf_analyzer uses:
    the statistics API and, with --shared-memory system, shared memory (perf_analyzer's own
    failure says less)."""
    async def problem() -> str | None:
        client = make_client(url, tls)
        headers = admin_access.grpc_headers(key)
        try:
            why = await server_problem(client)
            if why:
                return why
            try:
                await client.get_inference_statistics(model_name="", headers=headers, client_timeout=10)
                if shared_memory:
                    await client.get_system_shared_memory_status(headers=headers, client_timeout=10)
            except Exception as exc:
                if admin_access.refused(exc):
                    what = "the statistics API" + (" and shared memory" if shared_memory else "")
                    raise UsageError(admin_access.refusal(f"{what} (perf_analyzer uses it)", url, bool(key))) from None
            return None
        finally:
            await client.close()

    why = asyncio.run(problem())
    if why:
        raise VidclsError(f"no Triton server answers at {url} ({why}): start one with 'vidcls serve REPO', "
                          "or point --url at a running one (with --ssl and its certificates if it uses TLS)")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    config = VidclsConfig()
    videos = collect_inputs([str(v) for v in args.videos])[: max(1, args.max_videos)]
    if not videos:
        raise UsageError(f"no video files in {', '.join(map(str, args.videos))}")
    try:
        binary = find_perf_analyzer(args.perf_analyzer)
    except PerfError as exc:
        raise UsageError(str(exc)) from None
    tls = dict(ssl=args.ssl or bool(args.root_cert), root_cert=args.root_cert, client_cert=args.client_cert,
               client_key=args.client_key)
    try:
        tls_options = TLSOptions(**tls)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    key = admin_access.client_key(args.admin_key_file, [args.url])
    _check_server(args.url, tls_options, key, args.shared_memory != "none")
    out.mkdir(parents=True, exist_ok=True)
    data = write_input_data(videos, out / "inputs.json", config.serving.video)
    opts = PerfOptions(
        model=args.model, url=args.url, model_version=args.model_version, concurrency_range=args.concurrency_range,
        measurement_mode=args.measurement_mode, measurement_interval_ms=args.measurement_interval,
        measurement_request_count=args.measurement_request_count, stability_percentage=args.stability_percentage,
        max_trials=args.max_trials, shared_memory=args.shared_memory, ssl=args.ssl, root_cert=args.root_cert,
        client_cert=args.client_cert, client_key=args.client_key,
        parameters=[] if args.answer_cache else [(config.serving.cache_parameter, "false", "bool")],
        extra=shlex.split(args.perf_args), admin_key=key)
    cmd = build_command(binary, opts, out / "inputs.json", out / "perf.csv")
    print(f"perf_analyzer: {binary}\n  sweep {args.concurrency_range} on {data['videos']} videos → {out}",
          file=sys.stderr)

    def stats() -> dict[str, Any] | None:
        try:
            return fetch_statistics(args.url, **tls, admin_key=key)
        except Exception as exc:  # statistics are a bonus; the sweep still counts
            print(f"warning: statistics API: {exc}", file=sys.stderr)
            return None

    before = stats()
    t0 = time.monotonic()
    run_perf_analyzer(cmd, perf_environment(binary), out / "perf_analyzer.log", timeout=args.timeout)
    rows = read_perf_csv(out / "perf.csv")
    window = time.monotonic() - t0
    after = stats()
    ends = {args.model, config.serving.pipeline}  # the model called and the pipeline ensemble behind it
    steps = diff_statistics(before, after, window, ends) if before and after else []
    (out / "server_stats.json").write_text(json.dumps(
        {"window_s": window, "models": [s.as_dict() for s in steps], "before": before, "after": after}, indent=2))
    plot(rows, out / "bench.png", f"{args.model} @ {args.url}")
    meta = dict(model=args.model, url=args.url, videos=data["videos"], bytes=data["bytes"],
                concurrency_range=args.concurrency_range, window_s=window,
                measurement=(f"{args.measurement_interval} ms windows" if args.measurement_mode == "time_windows"
                             else f"{args.measurement_request_count}-request windows"),
                machine=f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
                date=time.strftime("%Y-%m-%d %H:%M"))
    text = summary_markdown(rows, steps, meta)
    (out / "summary.md").write_text(text)
    print(text)
    return 0
