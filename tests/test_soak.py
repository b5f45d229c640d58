"""The short soak: perf_analyzer at two concurrencies against the real cpu server.

Zero failed requests (Triton's own counters, every model), latency percentiles recorded, and the
resident memory of the whole server process tree (tritonserver + python stubs) bounded after
warm-up. The long mode (README figures) is the same script with --long.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A short run cannot prove the absence of a leak, but a leak per request shows: at ~200 requests,
# anything near a MB per request would pass this bound.
MAX_GROWTH_MB = 128.0


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_short_soak_has_no_failures_and_bounded_memory(triton_server, admin_key_file, tmp_path):
    from vidcls.client.perf import PerfError, find_perf_analyzer

    try:
        find_perf_analyzer()
    except PerfError as exc:
        pytest.skip(f"perf_analyzer is not installed (make tools): {exc}")
    out = tmp_path / "soak"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--short", "--url", triton_server.grpc_url,
         "--pid", str(triton_server.pid), "--admin-key-file", str(admin_key_file),
         "--out", str(out), "--work", str(tmp_path / "work"),
         "--max-rss-growth-mb", str(MAX_GROWTH_MB)],
        capture_output=True, text=True, timeout=280, cwd=ROOT)
    assert (out / "soak.json").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads((out / "soak.json").read_text())
    assert r["failures"] == 0, r["failures_by_model"]
    assert r["perf_analyzer_errors"] == 0, r["perf_analyzer_error_tails"]
    assert r["requests"] > 20 and [lv["concurrency"] for lv in r["levels"]] == [1, 2]
    for lv in r["levels"]:
        assert lv["requests"] > 0 and lv["failures"] == 0
        assert 0 < lv["p50_ms"] <= lv["p95_ms"] <= lv["p99_ms"]
    mem = r["memory"]
    assert mem["processes"] >= 2  # the server and its python-backend stubs are all measured
    assert mem["rss_growth_mb"] <= MAX_GROWTH_MB, mem
    assert len(r["samples"]) > 20
    assert "failed: **0**" in (out / "soak.md").read_text()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert triton_server.running()


def test_soak_refuses_a_non_loopback_server():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import soak
    finally:
        sys.path.pop(0)
    with pytest.raises(SystemExit):
        soak.check_loopback("10.1.2.3:8001")
    soak.check_loopback("127.0.0.1:8001")
    from vidcls.launcher import process_tree

    assert process_tree(os.getpid())[0] == os.getpid()
