"""``vidcls bench``: perf_analyzer discovery and environment, input data, CSV, statistics, reports.

The integration test (marked ``server``) runs the real perf_analyzer (``make tools``) against the
session's cpu tritonserver with a short measurement window.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from vidcls.cli import main as cli_main
from vidcls.client.perf import (PerfError, PerfOptions, build_command, find_perf_analyzer, perf_environment,
                                read_perf_csv, write_input_data)
from vidcls.client.stats import bottleneck, diff_statistics, markdown_table
from vidcls.config import VidclsConfig

PERF_CSV = """Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,Avg latency,request/response,response wait
2,6.1,13,60593,3,1535,268377,6052,4,347068,491321,519851,559041,336579,17,336528
1,14.7,12,0,2,693,94488,4083,7,53276,76046,78674,272807,63376,19,63321
"""


def _fake_tool_venv(root: Path) -> Path:
    """The layout `make tools` leaves: bin/perf_analyzer and the CUDA runtime in site-packages."""
    binary = root / "bin" / "perf_analyzer"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    (root / "lib" / "python3.11" / "site-packages" / "nvidia" / "cuda_runtime" / "lib").mkdir(parents=True)
    return binary


def test_find_perf_analyzer_and_its_environment(tmp_path, monkeypatch):
    binary = _fake_tool_venv(tmp_path / "perf")
    assert find_perf_analyzer(binary) == binary.resolve()
    assert find_perf_analyzer(tmp_path / "perf") == binary  # the venv folder
    monkeypatch.setenv("VIDCLS_PERF_ANALYZER", str(binary))
    assert find_perf_analyzer() == binary.resolve()
    with pytest.raises(PerfError):
        find_perf_analyzer(tmp_path / "nothing")
    env = perf_environment(binary, base={"LD_LIBRARY_PATH": "/x"})
    parts = env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert parts[0].endswith("site-packages/nvidia/cuda_runtime/lib") and parts[1] == "/x"


def test_input_data_json_holds_the_video_bytes(tmp_path):
    files = []
    for i, payload in enumerate([b"\x00\x01video", b"second file"]):
        files.append(tmp_path / f"{i}.mp4")
        files[-1].write_bytes(payload)
    info = write_input_data(files, tmp_path / "in.json", "VIDEO")
    data = json.loads((tmp_path / "in.json").read_text())["data"]
    assert info == {"videos": 2, "bytes": sum(f.stat().st_size for f in files)}
    for entry, f in zip(data, files):
        assert base64.b64decode(entry["VIDEO"]["b64"]) == f.read_bytes()
        assert entry["VIDEO"]["shape"] == [f.stat().st_size]  # no batch dimension (perf_analyzer adds it)


def test_command_and_csv(tmp_path):
    opts = PerfOptions(model="vidcls", url="h:1", concurrency_range="1:3", measurement_mode="count_windows",
                       measurement_request_count=7, ssl=True, root_cert="/ca.pem", extra=["--max-threads", "4"])
    cmd = build_command(Path("/pa"), opts, "in.json", "out.csv")
    joined = " ".join(cmd)
    for part in ("-m vidcls", "-i grpc", "-u h:1", "--input-data in.json", "--concurrency-range 1:3",
                 "--measurement-request-count 7", "-f out.csv", "--verbose-csv", "--ssl-grpc-use-ssl true",
                 "--ssl-grpc-root-certifications-file /ca.pem", "--max-threads 4"):
        assert part in joined
    (tmp_path / "p.csv").write_text(PERF_CSV)
    rows = read_perf_csv(tmp_path / "p.csv")
    assert [r["Concurrency"] for r in rows] == [1.0, 2.0]
    assert rows[0]["p99 latency"] == 272807.0


def _model(name, requests, executions, queue_ns, infer_ns, batch_ns):
    def s(ns, n):
        return {"count": str(n), "ns": str(ns)}

    return {"name": name, "version": "1", "inference_count": str(requests), "execution_count": str(executions),
            "inference_stats": {"success": s(0, requests), "queue": s(queue_ns, requests),
                                "compute_infer": s(infer_ns, requests)},
            "batch_stats": [{"batch_size": "1", "compute_infer": s(batch_ns, executions)}]}


def test_statistics_diff_finds_the_bottleneck():
    before = {"model_stats": [_model("vidcls", 10, 10, 0, 0, 0), _model("decode", 10, 10, 10**8, 10**9, 10**9),
                              _model("temporal_0", 40, 20, 0, 4 * 10**8, 2 * 10**8)]}
    after = {"model_stats": [_model("vidcls", 30, 30, 0, 0, 0), _model("decode", 30, 30, 5 * 10**8, 5 * 10**9, 5 * 10**9),
                             _model("temporal_0", 120, 60, 0, 12 * 10**8, 6 * 10**8),
                             _model("idle", 0, 0, 0, 0, 0)]}
    steps = diff_statistics(before, after, window_s=8.0, ensemble="vidcls")
    assert [s.model for s in steps] == ["vidcls", "decode", "temporal_0"]  # idle models left out
    decode, temporal = steps[1], steps[2]
    assert decode.requests == 20 and decode.queue_ms == pytest.approx(20.0) and decode.infer_ms == pytest.approx(200.0)
    assert decode.busy_s == pytest.approx(4.0) and decode.busy_share == pytest.approx(0.5)
    assert temporal.avg_batch == pytest.approx(2.0)  # dynamic batching: 80 requests in 40 executions
    assert bottleneck(steps).model == "decode"
    assert "| decode | 20 | 20 | 1.00 |" in markdown_table(steps)


@pytest.mark.server
def test_bench_against_cpu_server(triton_server, admin_key_file, client_videos, tmp_path):
    out = tmp_path / "bench"
    videos = [str(p) for p in client_videos["good"]]
    rc = cli_main(["bench", "--url", triton_server.grpc_url, *videos, "-o", str(out), "--admin-key-file", str(admin_key_file),
                   "--concurrency-range", "1:2", "--measurement-mode", "count_windows",
                   "--measurement-request-count", "4",
                   "--stability-percentage", "1000", "--max-trials", "3"])
    assert rc == 0, (out / "perf_analyzer.log").read_text()[-3000:] if (out / "perf_analyzer.log").exists() else ""
    rows = read_perf_csv(out / "perf.csv")
    assert [int(r["Concurrency"]) for r in rows] == [1, 2]
    assert all(r["Inferences/Second"] > 0 for r in rows)
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (out / "summary.md").read_text()
    assert "| concurrency | videos/s | p50 ms | p95 ms | p99 ms |" in summary
    assert "bottleneck:" in summary
    stats = json.loads((out / "server_stats.json").read_text())
    models = {m["model"]: m for m in stats["models"]}
    # Every step of the served ensemble shows up in the server-side table.
    names = VidclsConfig().serving
    for step in (names.ensemble, names.probe, names.decode, names.backbone, names.views, names.average):
        assert models[step]["requests"] > 0
    assert models[names.ensemble]["is_ensemble"] and models[names.ensemble]["failures"] == 0


def test_perf_analyzer_runs_as_typed():
    """`make tools` leaves a perf_analyzer that runs without LD_LIBRARY_PATH set by hand (it needs
    libcudart.so.12 from its own venv)."""
    import subprocess

    binary = find_perf_analyzer()
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    proc = subprocess.run([str(binary), "--version"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "libcudart" not in proc.stderr


@pytest.mark.server
def test_unstable_measurement_says_what_to_change(triton_server, admin_key_file, client_videos, tmp_path, capfd):
    """A stability threshold no machine meets: perf_analyzer gives up, and the one line says which
    options to change."""
    rc = cli_main(["bench", "--url", triton_server.grpc_url, str(client_videos["good"][1]), "-o", str(tmp_path),
                   "--admin-key-file", str(admin_key_file),
                   "--concurrency-range", "1:1", "--measurement-mode", "count_windows",
                   "--measurement-request-count", "2", "--stability-percentage", "0.0001", "--max-trials", "3"])
    err = capfd.readouterr().err.strip().splitlines()
    assert rc == 1
    assert err[-1].startswith("error: perf_analyzer found no stable measurement"), err
    assert "--stability-percentage" in err[-1] and "--measurement-interval" in err[-1]
