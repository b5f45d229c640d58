"""Large refused uploads must not pile up in the server.

Unit level: a request's error is kept as text, and the frames that held its input are cleared at
once (no reference cycle left for the collector). Server level: a real tritonserver gets several
large refused uploads (not a video; over ``max_bytes``) and large accepted ones; after the first
round its memory (PSS of the whole process tree, and the /dev/shm regions it maps) stays
within 10 %; RSS is reported too. Before the fix, every refused 32 MiB upload added about 32-64 MiB that was never
given back.
"""

from __future__ import annotations

import dataclasses
import gc
import time
import weakref

import numpy as np
import pytest

from vidcls.triton_models.base import BatchedModel, Failure, failure
from vidcls.video import VideoError, probe

MIB = 2**20


class _Refusing(BatchedModel):
    """Fails like the probe does: deep in a call that holds the input array."""

    model_name = "test_model"

    def process(self, batch):
        return [self.one(item["VIDEO"]) for item in batch]

    def one(self, video):
        try:
            probe(video)
        except Exception as exc:
            return exc
        raise AssertionError("random bytes were accepted")


class _Raising(_Refusing):
    """Raises for the whole batch: the retry-alone path keeps the exceptions in a local list."""

    def process(self, batch):
        for item in batch:
            self.check(item["VIDEO"])
        return [{} for _ in batch]

    def check(self, video):
        raise RuntimeError(f"cannot handle {video.nbytes} bytes")


@pytest.mark.parametrize("model", [_Refusing(), _Raising()], ids=["returned", "raised"])
def test_an_error_keeps_no_reference_to_the_request_input(model):
    videos = [np.random.default_rng(i).integers(0, 256, (1, 4 * MIB), dtype=np.uint8) for i in range(2)]
    refs = [weakref.ref(v) for v in videos]
    batch = [{"VIDEO": v} for v in videos]
    gc.disable()  # only reference counting may free them, as in a stub between collections
    try:
        results = model.process_isolated(batch)
        del batch, videos
        assert all(isinstance(r, Failure) for r in results), results
        assert [r() for r in refs] == [None, None], "an error response still holds the request's input"
    finally:
        gc.enable()
    assert results[0].invalid_input == (type(model) is _Refusing)
    assert results[0].message.startswith("not_a_video: " if (type(model) is _Refusing) else "internal: test_model")


def test_failure_releases_chained_exceptions():
    data = bytearray(MIB)

    def inner(buffer):
        raise ValueError("inner")

    def outer():
        held = np.frombuffer(data, np.uint8)
        try:
            inner(held)
        except ValueError:
            raise VideoError("corrupt", "outer") from None

    try:
        outer()
    except VideoError as exc:
        caught = exc
    frames_before = caught.__traceback__ is not None and caught.__context__ is not None
    result = failure(caught, "m")
    assert frames_before and result == Failure("corrupt: outer", True, "corrupt")
    assert caught.__traceback__ is None and caught.__context__ is None


# ---- the real server -----------------------------------------------------------------------------
LIMIT = 40 * MIB
UPLOAD = 32 * MIB  # refused (not a video) and accepted uploads
OVERSIZE = 48 * MIB  # refused by max_bytes
MAX_GROWTH = 0.10


@pytest.fixture(scope="module")
def memory_server(tiny_checkpoints, serving_config, tmp_path_factory):
    from tests.fixtures.serving import running_server
    from vidcls.export.repository import build_repository

    root = tmp_path_factory.mktemp("memory_server")
    config = serving_config.replace(limits=dataclasses.replace(serving_config.limits, max_bytes=LIMIT))
    repo = build_repository(tiny_checkpoints, root / "repo", target="cpu", config=config)
    yield from running_server(repo, tmp_path_factory, "memory")


def _send(url: str, config, data: np.ndarray) -> str:
    import tritonclient.grpc as grpcclient

    inp = grpcclient.InferInput(config.serving.video, [1, data.size], "UINT8")
    inp.set_data_from_numpy(data.reshape(1, -1))
    with grpcclient.InferenceServerClient(url) as client:
        try:
            # The answer cache off: every accepted upload goes through probe and decode again.
            client.infer(config.serving.ensemble, [inp], client_timeout=300,
                         parameters={config.serving.cache_parameter: False})
        except Exception as exc:
            return exc.message() if hasattr(exc, "message") else str(exc)
    return "ok"


def _settled(server, seconds: float = 1.5) -> dict[str, int]:
    """The server's memory once the last answer's buffers are released (the least of a few samples:
    a sample can land while a stub still frees what it held)."""
    samples = []
    for _ in range(4):
        time.sleep(seconds / 4)
        samples.append(server.memory())
    return {k: min(s[k] for s in samples) for k in ("rss", "pss", "shm")}


@pytest.mark.server
@pytest.mark.timeout(600)
def test_large_refused_uploads_do_not_pile_up_in_server_memory(memory_server, serving_config, video_factory):
    rng = np.random.default_rng(11)
    good = video_factory("memory_good.mp4", n=24, size=(96, 64), seed=5).read_bytes()
    accepted = np.frombuffer(good + bytes(UPLOAD - len(good)), np.uint8)  # a valid mp4 with trailing padding
    refused = rng.integers(0, 256, UPLOAD, dtype=np.uint8)
    oversize = rng.integers(0, 256, OVERSIZE, dtype=np.uint8)
    url = memory_server.grpc_url
    expected = {"accepted": "ok", "refused": "not_a_video:", "oversize": "max_bytes:"}
    payloads = {"accepted": accepted, "refused": refused, "oversize": oversize}

    def round_(kinds):
        for kind in kinds:
            outcome = _send(url, serving_config, payloads[kind])
            assert expected[kind] in outcome, (kind, outcome)

    round_(["accepted", "refused", "oversize"])  # the first round sizes the shared-memory regions
    base = _settled(memory_server)
    sent = 0
    for _ in range(3):
        round_(["refused", "oversize", "accepted", "refused"])
        sent += 2 * UPLOAD + OVERSIZE + UPLOAD
    end = _settled(memory_server)
    growth = {k: (end[k] - base[k]) / base[k] for k in ("rss", "pss", "shm")}
    report = ", ".join(f"{k} {base[k] / MIB:.0f} -> {end[k] / MIB:.0f} MiB ({growth[k]:+.1%})" for k in growth)
    print(report)
    # Before the fix the 12 uploads here (about 460 MiB) added roughly their size to RSS and
    # /dev/shm; after it, memory is what the first round left. PSS, not RSS: RSS counts a
    # shared-memory page once in every process that touched it, so it rises when one more stub
    # touches pages of a region that is not growing (seen: RSS +12 %, PSS +0.1 %, /dev/shm +0 %);
    # the old leaks were private heap (PSS) and growing regions (/dev/shm), caught either way.
    assert growth["pss"] < MAX_GROWTH and growth["shm"] < MAX_GROWTH, f"after {sent / MIB:.0f} MiB sent: {report}"
    assert memory_server.running()


@pytest.mark.server
@pytest.mark.timeout(300)
def test_hostile_soak_runs_against_a_server(memory_server, tmp_path):
    """benchmarks/soak.py --hostile: good, broken and oversize uploads at once, every answer the
    expected one, memory recorded (its figures are in docs/limits.md; the bound is tested above)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "hostile"
    proc = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "soak.py"), "--hostile", "--short", "--url", memory_server.grpc_url,
         "--pid", str(memory_server.pid), "--hostile-max-mb", str(LIMIT / MIB), "--seconds-per-level", "8",
         "--concurrency", "2", "--max-growth-pct", "1000", "--out", str(out), "--work", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=280, cwd=root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads((out / "soak.json").read_text())
    assert not r["unexpected"] and r["requests"] > 0
    # The warm-up round sends every file from every thread: each kind is there, each answered right.
    assert set(r["warmup_by_kind"]) == {"good", "broken", "oversize"}
    for counts in (*r["warmup_by_kind"].values(), *r["by_kind"].values()):
        assert counts["requests"] == counts["as_expected"]
    assert r["memory"]["shm_baseline_mb"] > 0 and "Hostile soak" in (out / "soak.md").read_text()
