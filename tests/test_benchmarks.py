"""Every benchmark still runs: each script in benchmarks/ in its smallest mode.

A benchmark is not a test, so nothing else notices when one stops running (one crashed at start
after a helper it imported had moved, and stayed broken until someone ran it by hand). ``SMOKE``
says, for every file in benchmarks/, how ``make test`` runs it: its smallest mode here (``--smoke``,
or the smallest arguments where the script's own options already give one: the tiny models, a
few short clips, one repetition), or the test files that already run it, or the script whose
smoke run imports it. A new benchmark without an entry fails
:func:`test_every_benchmark_has_a_smoke_entry`. Scripts that need a GPU for every step
(gpu_bench.py) get ``--help`` (tests/test_perf_settings.py also imports it and checks its settings
parsing); DALI's runs on the CPU (VP9) and is skipped where DALI is not installed.

A smoke run measures nothing: it checks that the script gets to its end with exit status 0 (and
where the script has a correctness check of its own, that it holds). Cost of each (pytest's
durations), 2-core VM, 2026-12-02, under a load average of 5-10 from other test suites on the
machine: bench_dali_isolation 14 s, bench_decode 7 s,
bench_evidence 87 s, bench_extract 19 s, bench_fp16_lstm 12 s, bench_onnx 15 s, bench_pipeline
51 s, bench_serving 41 s, gpu_bench --help 1 s. bench_serving and bench_pipeline start from the
session's tiny checkpoints and exported repository (their cache, as a second run of the script
would find it; the first of them to run pays for that export if no other test has); bench_evidence
exports its own two repositories (with and without the evidence outputs).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


@dataclass(frozen=True)
class Smoke:
    """Run here: ``args`` ({work} is a fresh folder), exit status 0 and ``expect`` in the output."""

    args: tuple[str, ...]
    expect: str
    server: bool = False  # starts tritonserver: marked server
    needs: str | None = None  # a module it cannot run without (skipped where it is not installed)
    seed: bool = False  # {work} starts with the session's tiny checkpoints and cpu repository


@dataclass(frozen=True)
class Elsewhere:
    """Run by these test files (in its own small mode)."""

    tests: tuple[str, ...]


@dataclass(frozen=True)
class ImportedBy:
    """A module of the benchmarks, not a script: this script's smoke run imports and runs it."""

    script: str


SMOKE = {
    "bench_dali_isolation.py": Smoke(("--videos", "2", "--batch", "2", "--instances", "2", "--threads", "1"),
                                     "isolated (batch 1, 2 instances)", needs="nvidia.dali"),
    "bench_decode.py": Smoke(("--smoke", "--work", "{work}"), "identical frames in every case"),
    "bench_evidence.py": Smoke(("--videos", "1", "--seconds", "1", "--rounds", "1", "--concurrency", "1",
                                "--work", "{work}"), "evidence outputs, asked", server=True),
    "bench_extract.py": Smoke(("--backbone", "tiny", "--videos", "1"), "ratio 3x / once"),
    "bench_fp16_lstm.py": Smoke(("--smoke",), "GPU tolerance"),
    "bench_onnx.py": Smoke(("--smoke",), "frames per call"),
    "bench_pipeline.py": Smoke(("--smoke", "--work", "{work}"), "report:", server=True, seed=True),
    "bench_serving.py": Smoke(("--smoke", "--work", "{work}"), "vidcls_pipeline", server=True, seed=True),
    "content_mix.py": ImportedBy("bench_pipeline.py"),
    "gpu_bench.py": Smoke(("--help",), "usage: gpu_bench.py"),
    "soak.py": Elsewhere(("tests/test_soak.py", "tests/test_server_memory.py")),
}


def test_every_benchmark_has_a_smoke_entry():
    scripts = sorted(p.name for p in BENCHMARKS.glob("*.py"))
    assert scripts and sorted(SMOKE) == scripts, (
        f"benchmarks without a smoke entry: {sorted(set(scripts) - set(SMOKE))}; "
        f"entries without a script: {sorted(set(SMOKE) - set(scripts))}")
    for name, entry in SMOKE.items():
        if isinstance(entry, Elsewhere):
            for test in entry.tests:
                assert f'"{name}"' in (ROOT / test).read_text(), f"{test} does not run {name}"
        elif isinstance(entry, ImportedBy):
            assert isinstance(SMOKE[entry.script], Smoke), entry
            assert f"from {Path(name).stem} import" in (BENCHMARKS / entry.script).read_text(), entry


def _params():
    for name, entry in SMOKE.items():
        if isinstance(entry, Smoke):
            yield pytest.param(name, id=name.removesuffix(".py"), marks=[pytest.mark.server] if entry.server else [])


@pytest.mark.timeout(600)
@pytest.mark.parametrize("script", list(_params()))
def test_benchmark_smoke_run(script, tmp_path, request):
    entry = SMOKE[script]
    if entry.needs and importlib.util.find_spec(entry.needs) is None:
        pytest.skip(f"{script} needs {entry.needs}, which is not installed")
    work = tmp_path / "work"
    if entry.seed:
        _seed(work, request)
    args = [a.replace("{work}", str(work)) for a in entry.args]
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=560)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert entry.expect in proc.stdout, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    if script == "bench_pipeline.py":
        # Its own correctness checks: served probabilities equal to the reference approach's,
        # identical features with and without the identical-frame skip, no failed request.
        report = json.loads((work / "report.json").read_text())
        assert report["smoke"] and set(report["sets"]) == {"current", "mix"}
        assert report["dedup"]["max_abs_diff"] == 0.0
        for entry_ in report["variants"][0]["sets"].values():
            assert entry_["max_prob_diff_vs_reference"] <= 1e-5
            assert all(not row["errors"] for row in entry_["sweep"])


def _seed(work: Path, request) -> None:
    """The cache a second run of bench_serving / bench_pipeline would find: the session's tiny
    checkpoints and their exported cpu repository, which are the smoke config's."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from bench_serving import smoke_config
    finally:
        sys.path.remove(str(BENCHMARKS))
        sys.modules.pop("bench_serving", None)
    assert request.getfixturevalue("serving_config") == smoke_config()
    shutil.copytree(request.getfixturevalue("tiny_checkpoints"), work / "checkpoints")
    shutil.copytree(request.getfixturevalue("cpu_repository"), work / "repo_cpu")
