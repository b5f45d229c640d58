"""perf_analyzer: finding the binary, its environment, its input data and its CSV.

Here perf_analyzer comes from ``tritonclient[all]==2.50.0`` in its own venv (``make tools`` →
``.tools/perf``; docs/design.md says why): it needs ``libcudart.so.12`` from the
``nvidia-cuda-runtime-cu12`` package of that venv on ``LD_LIBRARY_PATH``. ``make tools`` makes
``.tools/perf/bin/perf_analyzer`` a wrapper that does so (the tool runs as typed), and
:func:`perf_environment` does the same for any perf_analyzer of such a venv.
"""

from __future__ import annotations

import base64
import csv
import glob
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from vidcls import admin_access
from vidcls.errors import VidclsError

ENV_VAR = "VIDCLS_PERF_ANALYZER"
TOOLS_DIR = Path(".tools") / "perf"


class PerfError(VidclsError):
    """perf_analyzer is missing or failed; the message is one line (the cause, the fix, the log)."""


# perf_analyzer's message when throughput or latency kept varying more than -s percent between
# its last three windows at some concurrency (a busy machine, or windows too short).
UNSTABLE = "Failed to obtain stable measurement"


def _repo_root() -> Path:
    # client/perf.py lives in <repo>/client in a source checkout (editable install).
    return Path(__file__).resolve().parents[1]


def _candidates_in_venv(venv: Path) -> list[Path]:
    return [venv / "bin" / "perf_analyzer",
            *map(Path, sorted(glob.glob(str(venv / "lib" / "python*" / "site-packages" / "tritonclient" / "bin"
                                            / "perf_analyzer"))))]


def find_perf_analyzer(explicit: str | os.PathLike | None = None) -> Path:
    """``explicit`` → $VIDCLS_PERF_ANALYZER → .tools/perf (cwd, then the source tree) → PATH."""
    if explicit:
        p = Path(explicit)
        if p.is_dir():  # a tool venv given as a folder
            found = [c for c in _candidates_in_venv(p) if c.is_file()]
            if found:
                return found[0]
        if p.is_file() and os.access(p, os.X_OK):
            return p.resolve()
        raise PerfError(f"perf_analyzer not found at {p}")
    if os.environ.get(ENV_VAR):
        return find_perf_analyzer(os.environ[ENV_VAR])
    for venv in (Path.cwd() / TOOLS_DIR, _repo_root() / TOOLS_DIR):
        for c in _candidates_in_venv(venv):
            if c.is_file() and os.access(c, os.X_OK):
                return c.resolve()
    which = shutil.which("perf_analyzer")
    if which:
        return Path(which).resolve()
    raise PerfError("perf_analyzer not found: run `make tools` (builds .tools/perf), or pass --perf-analyzer PATH")


def cuda_runtime_dirs(binary: Path) -> list[str]:
    """``nvidia/cuda_runtime/lib`` folders of the venv the binary belongs to."""
    dirs: list[str] = []
    for parent in list(binary.resolve().parents)[:8]:
        dirs += sorted(glob.glob(str(parent / "lib" / "python*" / "site-packages" / "nvidia" / "cuda_runtime" / "lib")))
        if dirs:
            break
    return dirs


def perf_environment(binary: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment perf_analyzer runs in: its venv's CUDA runtime on LD_LIBRARY_PATH."""
    env = dict(os.environ if base is None else base)
    parts = cuda_runtime_dirs(binary) + [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(dict.fromkeys(parts))
    return env


def write_input_data(videos: Sequence[str | os.PathLike], path: str | os.PathLike, input_name: str) -> dict:
    """perf_analyzer --input-data JSON: one entry per video, raw bytes as base64 with their shape.

    The shape leaves out the batch dimension (the ensemble has max_batch_size > 0; perf_analyzer
    adds it from -b). Returns a short description (count, total bytes)."""
    if not videos:
        raise PerfError("no videos for the input data")
    entries, total = [], 0
    for v in videos:
        data = Path(v).read_bytes()
        if not data:
            raise PerfError(f"{v} is empty")
        total += len(data)
        entries.append({input_name: {"b64": base64.b64encode(data).decode("ascii"), "shape": [len(data)]}})
    Path(path).write_text(json.dumps({"data": entries}))
    return {"videos": len(entries), "bytes": total}


@dataclass
class PerfOptions:
    model: str
    url: str
    model_version: str = ""
    concurrency_range: str = "1:4"
    measurement_mode: str = "time_windows"
    measurement_interval_ms: int = 5000
    measurement_request_count: int = 50
    stability_percentage: float = 10.0
    max_trials: int = 10
    shared_memory: str = "none"
    ssl: bool = False
    root_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    # Request parameters (name, value, type), e.g. ("answer_cache", "false", "bool"): perf_analyzer
    # sends the same few files again and again, which the answer cache would answer after the first.
    parameters: list[tuple[str, str, str]] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    admin_key: str | None = None  # the operator key: --shared-memory system registers regions


def build_command(binary: Path, opts: PerfOptions, input_json: str | os.PathLike, csv_path: str | os.PathLike) -> list[str]:
    cmd = [str(binary), "-m", opts.model, "-i", "grpc", "-u", opts.url, "-b", "1",
           "--input-data", str(input_json), "--concurrency-range", opts.concurrency_range,
           "--measurement-mode", opts.measurement_mode, "-s", str(opts.stability_percentage),
           "-r", str(opts.max_trials), "--shared-memory", opts.shared_memory,
           "-f", str(csv_path), "--verbose-csv"]
    if opts.measurement_mode == "count_windows":
        cmd += ["--measurement-request-count", str(opts.measurement_request_count)]
    else:
        cmd += ["-p", str(opts.measurement_interval_ms)]
    if opts.model_version:
        cmd += ["-x", opts.model_version]
    for name, value, kind in opts.parameters:
        cmd += ["--request-parameter", f"{name}:{value}:{kind}"]
    if opts.admin_key:
        # -H says "HTTP" in perf_analyzer's help, but 2.50 sends it as gRPC metadata too (checked
        # against a restricted server: shared memory registered with it, refused without).
        for name, value in admin_access.grpc_headers(opts.admin_key).items():
            cmd += ["-H", f"{name}:{value}"]
    if opts.ssl or opts.root_cert:
        cmd += ["--ssl-grpc-use-ssl", "true"]
        for flag, value in (("--ssl-grpc-root-certifications-file", opts.root_cert),
                            ("--ssl-grpc-private-key-file", opts.client_key),
                            ("--ssl-grpc-certificate-chain-file", opts.client_cert)):
            if value:
                cmd += [flag, str(value)]
    return cmd + list(opts.extra)


def run_perf_analyzer(cmd: list[str], env: dict[str, str], log_path: str | os.PathLike,
                      timeout: float | None = None) -> None:
    """Run it with its console report saved to ``log_path``; a failure carries the log's tail."""
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise PerfError(f"perf_analyzer ran past {timeout:.0f} s; log: {log_path}") from None
    if proc.returncode != 0:
        raise PerfError(failure_line(Path(log_path).read_text(errors="replace"), proc.returncode, log_path))


def failure_line(log_text: str, returncode: int, log_path: str | os.PathLike) -> str:
    """One line for a failed perf_analyzer run: its last message and, for the failures a user can
    do something about, what to change."""
    lines = [ln.strip() for ln in log_text.splitlines() if ln.strip()]
    if any(admin_access.refused(ln) for ln in lines):
        return f"{admin_access.refusal('perf_analyzer (statistics, shared memory)')}; log: {log_path}"
    if any(UNSTABLE in ln for ln in lines):
        return (f"perf_analyzer found no stable measurement (throughput or latency varied more than "
                f"--stability-percentage between its windows, as on a busy machine): raise "
                f"--stability-percentage (e.g. 25), lengthen --measurement-interval (e.g. 10000 ms) or raise "
                f"--max-trials; log: {log_path}")
    last = lines[-1] if lines else "no output"
    return f"perf_analyzer failed (exit {returncode}): {last}; log: {log_path}"


def read_perf_csv(path: str | os.PathLike) -> list[dict[str, float]]:
    """perf_analyzer's CSV rows (one per concurrency), numbers as floats; latencies stay in µs."""
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            clean = {}
            for k, v in row.items():
                if k is None:
                    continue
                try:
                    clean[k.strip()] = float(v)
                except (TypeError, ValueError):
                    clean[k.strip()] = v
            rows.append(clean)
    if not rows:
        raise PerfError(f"{path} has no measurements")
    return sorted(rows, key=lambda r: r.get("Concurrency", 0))
