"""The README's commands work as written.

The README's CPU section (the first ``bash`` block under "### On a CPU") is the single source of
the commands: this test reads the block from README.md and runs it with bash, in a folder laid
out as ``make demo`` leaves the repository (``.venv``, ``demo_out/checkpoints``,
``demo_out/data/test/<Class>/``; tiny models and a few real videos stand in for the demo's, so the
test takes seconds, not the demo's minutes).

Ports: the block starts ``vidcls serve`` without port options, so it listens on Triton's usual
ports, and points ``vidcls classify`` at 127.0.0.1:8001. Run as written, a second test run or
any other server on this machine (tests run in parallel here and in CI) would collide on those
ports. So the test checks that the block relies on the defaults (no port option of its own; the
address it classifies against is the default gRPC port of ``vidcls serve`` and the client's
default), and only then substitutes free ports in exactly those two places. Everything else runs
verbatim.

Also checked here: statements of the README that code can check (the serve ports, where
perf_analyzer comes from), and that nothing in the repository refers to documents or issue
numbers a reader of the repository cannot see.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vidcls.config import VidclsConfig
from vidcls.launcher import DEFAULT_PORTS, free_port, port_in_use

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SERVE = "vidcls serve repo_cpu"
GRPC_ADDRESS = f"127.0.0.1:{DEFAULT_PORTS['grpc']}"


def section_block(heading: str, text: str | None = None) -> str:
    """The first ```bash block after the line starting with ``heading``."""
    text = README.read_text() if text is None else text
    start = text.index("\n" + heading)
    match = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    assert match, f"no bash block under {heading!r}"
    return match.group(1)


def test_cpu_section_relies_on_the_default_ports():
    from vidcls.cli import command_parser
    from vidcls.client.classify import DEFAULT_URL
    import vidcls.launcher as launcher

    block = section_block("### On a CPU")
    serve_lines = [ln for ln in block.splitlines() if ln.strip().startswith(SERVE)]
    assert len(serve_lines) == 1 and "-port" not in serve_lines[0]
    assert block.count(GRPC_ADDRESS) == 1 and GRPC_ADDRESS == DEFAULT_URL
    parser = command_parser("serve", launcher)
    assert [parser.get_default(f"{key}_port") for key in ("grpc", "http", "metrics")] == [8001, 8000, 8002]
    readme = README.read_text()
    assert "gRPC 8001, HTTP 8000, metrics 8002" in readme and "`--grpc-port 0` etc. = a free port" in readme


def test_first_bench_mention_says_make_tools_installs_perf_analyzer():
    paragraphs = README.read_text().split("\n\n")
    first = next(p for p in paragraphs if "vidcls bench" in p)
    assert "make tools" in first and "perf_analyzer" in first, first


def test_no_references_to_documents_or_issues_outside_the_repository():
    pattern = re.compile("|".join([r"DESIGN\.md", "ENVIRONMENT" + r"\.md", r"(?i:\bissues? #?[0-9]+)",
                                   r"\bDESIGN [0-9]"]))
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    found = []
    for name in files:
        path = ROOT / name
        if not path.is_file() or path.suffix in (".png", ".onnx", ".plan"):
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        found += [f"{name}:{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1) if pattern.search(line)]
    assert not found, "\n".join(found)


@pytest.fixture
def demo_layout(tmp_path, tiny_checkpoints, video_factory):
    """A folder as `make demo` leaves the repository, with tiny stand-ins for its outputs."""
    (tmp_path / ".venv").symlink_to(sys.prefix)  # the venv this test runs in
    shutil.copytree(tiny_checkpoints, tmp_path / "demo_out" / "checkpoints")
    videos = []
    for i, cls in enumerate(VidclsConfig().classes):
        folder = tmp_path / "demo_out" / "data" / "test" / cls
        folder.mkdir(parents=True)
        codec, suffix = ("libvpx-vp9", ".webm") if i % 2 else ("libx264", ".mp4")
        src = video_factory(f"readme_{i}{suffix}", n=12 + 4 * i, size=(96, 64), codec=codec, seed=40 + i)
        videos.append(Path(shutil.copyfile(src, folder / f"{cls.lower()}_{i}{suffix}")))
    return tmp_path, videos


@pytest.mark.server
@pytest.mark.timeout(600)
def test_cpu_section_runs_as_written(demo_layout, serving_config):
    root, videos = demo_layout
    block = section_block("### On a CPU")
    ports = {key: free_port() for key in DEFAULT_PORTS}
    # The only changes: free ports instead of Triton's usual ones (see the module docstring).
    script = block.replace(SERVE, f"{SERVE} --grpc-port {ports['grpc']} --http-port {ports['http']} "
                                  f"--metrics-port {ports['metrics']}", 1)
    script = script.replace(GRPC_ADDRESS, f"127.0.0.1:{ports['grpc']}", 1)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(Path(sys.prefix))))  # `source` must do it
    proc = subprocess.Popen(["bash", "-e", "-c", script], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=420)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the background `vidcls serve` stops its server
            proc.wait(60)
    assert proc.returncode == 0, output[-4000:]
    assert "ready  gRPC" in output, output[-4000:]
    rows = [json.loads(line) for line in (root / "out.jsonl").read_text().splitlines() if line.strip()]
    assert sorted(r["path"] for r in rows) == sorted(str(v) for v in videos)
    assert all(not r["error"] and r["class"] in serving_config.classes for r in rows), rows
    # `kill %1` stopped the server: its ports come free.
    deadline = time.monotonic() + 60
    while any(port_in_use("127.0.0.1", p) for p in ports.values()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(port_in_use("127.0.0.1", p) for p in ports.values())
