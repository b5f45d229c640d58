"""``vidcls classify``: the batch gRPC client.

Unit tests (no server) pin input discovery, the crash-safe output, the fleet's endpoint choice and
error classification. Integration tests (marked ``server``) run against the real tritonserver of
tests/fixtures/serving.py (and a second one, ``spare_server``, for the restart and fleet tests)
and compare the client's probabilities with a direct tritonclient request.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vidcls.cli import main as cli_main
from vidcls.client.classify import classify_paths
from vidcls.client.fleet import Endpoint, Fleet
from vidcls.client.results import ResultWriter, fieldnames, load_done, written_classes
from vidcls.inputs import collect_inputs, discover

REPO = Path(__file__).resolve().parents[1]
# wait_for_server=None: no check before the run, so these runs reach the per-file retry budget
# (what a server that goes away mid-run meets) against an address where nothing listens.
FAST = dict(progress=False, retries=1, backoff=0.01, backoff_max=0.02, wait_for_server=None)


def read_rows(path: Path) -> list[dict]:
    """Every record in an output, duplicates included (load_done would fold them)."""
    text = Path(path).read_text()
    if Path(path).suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return list(csv.DictReader(text.splitlines()))


# ---- unit: no server ---------------------------------------------------------------------------
def test_client_modules_import_no_torch():
    """`pip install vidcls[client]` is enough: the client never imports torch (or PyAV)."""
    code = ("import sys, vidcls.client.classify, vidcls.client.bench; "
            "bad = [m for m in ('torch', 'av', 'onnxruntime') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_collect_inputs_folders_lists_explicit(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for rel in ("a/1.mp4", "a/b/2.MKV", "a/b/3.webm", "a/notes.txt", "x.bin"):
        (tmp_path / rel).write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# comment\n\n{tmp_path / 'x.bin'}\n{tmp_path / 'a' / '1.mp4'}\n")
    found = collect_inputs([str(tmp_path / "a"), f"@{listing}", str(tmp_path / "missing.mp4")],
                           list_files=[str(listing)])
    assert found == [str(tmp_path / p) for p in ("a/1.mp4", "a/b/2.MKV", "a/b/3.webm", "x.bin", "missing.mp4")]


def test_discovery_follows_the_allowed_containers(tmp_path):
    """One rule for "is this a video file": the extensions of the containers the probe allows, so
    a folder gives every file a decision and never one the probe would refuse by its container."""
    import dataclasses

    from vidcls.config import InputLimits

    names = ["a.mpg", "b.VOB", "c.wmv", "d.mxf", "e.dv", "f.ogv", "g.wav", "h.txt", ".hidden.mp4", "i.mov", "noext"]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    decided = {Path(p).name: why for p, why in discover([str(tmp_path)])}
    assert set(decided) == set(names)  # every file has a row
    assert {n for n, why in decided.items() if why is None} == {"a.mpg", "b.VOB", "c.wmv", "d.mxf", "e.dv", "f.ogv",
                                                                 "i.mov"}
    assert "hidden" in decided[".hidden.mp4"] and ".wav" in decided["g.wav"] and "no extension" in decided["noext"]
    # A server that refuses MPEG program streams: its .mpg/.vob files are not picked up either.
    strict = dataclasses.replace(InputLimits(), allowed_containers=("mov", "mp4"))
    assert collect_inputs([str(tmp_path)], limits=strict) == [str(tmp_path / "i.mov")]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_output_resume_cuts_partial_last_line(tmp_path, suffix):
    out = tmp_path / f"r{suffix}"
    fmt = suffix[1:]
    classes = ("A", "B")
    with ResultWriter(str(out), fmt, fieldnames(classes)) as w:
        w.write({"path": "/v/1.mp4", "class": "A", "A": 0.75, "B": 0.25, "latency_ms": 3.0, "error": "",
                 "attempts": 1, "endpoint": "h:1"})
        w.write({"path": "/v/2.mp4", "class": "", "A": None, "B": None, "error": "bad\nmulti-line message",
                 "attempts": 1, "endpoint": "h:1"})
    with open(out, "a") as f:  # what a run killed in the middle of a write leaves
        f.write('/v/3.mp4,A,0.5' if fmt == "csv" else '{"path": "/v/3.mp4", "cla')
    done, header = load_done(out, fmt)
    assert set(done) == {"/v/1.mp4", "/v/2.mp4"}
    assert out.read_text().endswith("\n") and "/v/3.mp4" not in out.read_text()
    assert len(out.read_text().splitlines()) == (3 if fmt == "csv" else 2)  # one line per record
    assert float(done["/v/1.mp4"]["A"]) == 0.75
    assert done["/v/2.mp4"]["error"] == "bad | multi-line message"


def test_fleet_round_robin_least_outstanding_and_failover():
    now = [100.0]
    eps = [Endpoint("a"), Endpoint("b"), Endpoint("c")]
    rr = Fleet(eps, "round-robin", clock=lambda: now[0])
    assert [rr.pick().url for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]
    rr.failed(eps[1])  # b set aside: traffic goes to the others
    assert "b" not in {rr.pick().url for _ in range(6)}
    assert rr.pick(exclude=[eps[0], eps[2]]).url == "b"  # all others excluded: the one back first
    now[0] += 10
    assert "b" in {rr.pick().url for _ in range(3)}  # cool-down over: b is back
    assert rr.outage_s() == 0.0  # a and c never failed
    for ep in eps:
        rr.failed(ep)
    now[0] += 5
    assert rr.outage_s() == pytest.approx(5.0)  # every endpoint failing for 5 s
    rr.succeeded(eps[0])
    assert rr.outage_s() == 0.0

    lo = Fleet([Endpoint("a"), Endpoint("b")], "least-outstanding", clock=lambda: now[0])
    lo.endpoints[0].outstanding = 3
    assert {lo.pick().url for _ in range(4)} == {"b"}
    lo.endpoints[1].outstanding = 5
    assert lo.pick().url == "a"


def test_error_kinds():
    from tritonclient.utils import InferenceServerException

    from vidcls.client.request import error_kind

    def kind(status):
        return error_kind(InferenceServerException("m", status=status))[0]

    assert kind("StatusCode.UNAVAILABLE") == "transient"
    assert kind("StatusCode.DEADLINE_EXCEEDED") == "timeout"
    # Anything else is settled by a health check of the endpoint right after the error.
    assert kind("StatusCode.INVALID_ARGUMENT") == kind("StatusCode.INTERNAL") == "ambiguous"


def test_unreachable_server_and_unreadable_file_are_recorded(tmp_path, dead_url):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\x00" * 10)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{tmp_path / 'gone.mp4'}\n")  # a list file's entries may vanish: a record each
    out = tmp_path / "out.csv"
    summary = classify_paths([str(video), f"@{listing}"], dead_url, output=str(out), **{**FAST, "retries": 2})
    assert summary.exit_code == 1
    rows = {r["path"]: r for r in read_rows(out)}
    assert rows[str(video)]["error"].startswith("unavailable after 3 attempts")
    assert rows[str(video)]["attempts"] == "3"
    assert rows[str(tmp_path / "gone.mp4")]["error"].startswith("unreadable")
    # An existing output is never replaced by accident.
    assert cli_main(["classify", str(video), "--url", dead_url, "-o", str(out), "-q"]) == 2


def test_no_server_fails_at_once_in_one_line(tmp_path, dead_url, capfd):
    """Nothing listens at --url: one line and exit code 1 within seconds, before any file is sent
    (not each file's retry budget), and no output file."""
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    t0 = time.monotonic()
    rc = cli_main(["classify", str(video), "--url", dead_url, "-o", str(tmp_path / "out.csv")])
    err = capfd.readouterr().err.strip()
    assert rc == 1 and time.monotonic() - t0 < 10
    assert err.startswith(f"error: no Triton server answers at {dead_url}") and "\n" not in err
    assert not (tmp_path / "out.csv").exists()
    # Waiting for a server that is starting: the same line after the wait.
    t0 = time.monotonic()
    assert cli_main(["classify", str(video), "--url", dead_url, "--wait-for-server", "2", "-q"]) == 1
    assert 2 <= time.monotonic() - t0 < 12
    assert "within 2 s" in capfd.readouterr().err


def test_resume_keeps_failed_records_and_retry_failed_replaces_them(tmp_path, dead_url):
    videos = []
    for i in range(3):
        videos.append(tmp_path / f"v{i}.mp4")
        videos[-1].write_bytes(b"x")
    out = tmp_path / "out.jsonl"
    first = classify_paths([str(v) for v in videos[:2]], dead_url, output=str(out), **FAST)
    assert first.failed == 2 and first.exit_code == 1
    # --resume: the two failed records stay (and still count in the exit code); only v2 is new.
    again = classify_paths([str(v) for v in videos], dead_url, output=str(out), resume=True, **FAST)
    assert (again.resumed, again.failed, again.previously_failed, again.exit_code) == (2, 1, 2, 1)
    # --retry-failed: failed records are dropped and tried again, never duplicated.
    retried = classify_paths([str(v) for v in videos], dead_url, output=str(out), resume=True, retry_failed=True,
                             **FAST)
    assert (retried.resumed, retried.failed, retried.previously_failed) == (0, 3, 0)
    assert sorted(r["path"] for r in read_rows(out)) == sorted(str(v) for v in videos)


def test_every_file_found_gets_a_row_and_the_summary_counts_skipped(tmp_path, dead_url):
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.mp4", "b.mpg", "sub/c.wmv", "song.wav", "notes.txt", ".DS_Store", "sub/._a.mp4"):
        (folder / name).write_bytes(b"x")
    out = folder / "results.csv"  # the output inside the folder is not an input
    summary = classify_paths([str(folder)], dead_url, output=str(out), **FAST)
    rows = {Path(r["path"]).name: r for r in read_rows(out)}
    assert set(rows) == {"a.mp4", "b.mpg", "c.wmv", "song.wav", "notes.txt", ".DS_Store", "._a.mp4"}
    skipped = {n for n, r in rows.items() if r["skipped"]}
    assert skipped == {"song.wav", "notes.txt", ".DS_Store", "._a.mp4"}
    assert all(r["error"] == "" and r["class"] == "" for n, r in rows.items() if n in skipped)
    assert all(r["error"].startswith("unavailable") for n, r in rows.items() if n not in skipped)
    assert (summary.total, summary.skipped, summary.failed) == (7, 4, 3)
    assert "skipped (not videos) 4" in summary.format()


def test_byte_budget_bounds_the_file_bytes_held_at_once():
    import asyncio

    from vidcls.client.classify import ByteBudget

    async def run() -> ByteBudget:
        budget = ByteBudget(100)

        async def hold(size: int) -> None:
            await budget.acquire(size)
            await asyncio.sleep(0.01)
            await budget.release(size)

        await asyncio.gather(*(hold(s) for s in [60, 30, 30, 250, 10, 90, 40] * 3))
        return budget

    budget = asyncio.run(run())
    assert budget.used == 0 and budget.peak == 250  # never over 100, except a bigger file alone


def test_long_outage_gives_remaining_files_up_quickly(tmp_path, dead_url):
    videos = []
    for i in range(6):
        videos.append(tmp_path / f"v{i}.mp4")
        videos[-1].write_bytes(b"x")
    t0 = time.monotonic()
    summary = classify_paths([str(v) for v in videos], dead_url, progress=False, concurrency=1, retries=10_000,
                             retry_timeout=0.5, backoff=0.05, backoff_max=0.1, wait_for_server=None)
    assert summary.failed == 6 and time.monotonic() - t0 < 10
    assert summary.records[0]["attempts"] > 1 and summary.records[-1]["attempts"] == 1  # the outage was known


def test_output_folder_and_no_writes_outside_it(tmp_path, dead_url):
    """Input paths are data: only the chosen output file is written."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "..evil.mp4").write_bytes(b"x")  # hidden: a skipped row
    (inputs / "evil..mp4").write_bytes(b"x")
    outdir = tmp_path / "out"
    outdir.mkdir()
    before = sorted(p for p in tmp_path.rglob("*"))
    summary = classify_paths([str(inputs)], dead_url, output=str(outdir), **FAST)
    after = sorted(p for p in tmp_path.rglob("*"))
    assert set(after) - set(before) == {outdir / "results.csv"}
    assert (summary.failed, summary.skipped) == (1, 1)


# ---- integration: the real server --------------------------------------------------------------
def _direct(grpc_infer, path, config):
    result = grpc_infer(path)
    return result.as_numpy(config.serving.probabilities).reshape(-1)


def _server_error(grpc_infer, path) -> str:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as info:
        grpc_infer(path)
    return info.value.message()


@pytest.mark.server
def test_oversize_and_empty_files_are_refused_without_being_read(triton_server, serving_config, client_videos,
                                                                  tmp_path, monkeypatch):
    """The client learns the served limits (the ensemble's config parameter) and refuses a file
    over max_bytes with the server's error code, unread and unsent."""
    import vidcls.client.classify as classify

    folder = tmp_path / "big"
    folder.mkdir()
    huge = folder / "huge.mp4"
    with open(huge, "wb") as f:  # sparse: 600 MiB on paper, nothing on disk
        f.truncate(serving_config.limits.max_bytes + 88 * 2**20)
    (folder / "empty.mp4").write_bytes(b"")
    good = client_videos["good"][0]
    read = []
    real_read = classify._read

    async def spy(path):
        read.append(path)
        return await real_read(path)

    monkeypatch.setattr(classify, "_read", spy)
    t0 = time.monotonic()
    summary = classify_paths([str(folder), str(good)], triton_server.grpc_url, config=serving_config, progress=False)
    rows = {Path(r["path"]).name: r for r in summary.records}
    assert rows["huge.mp4"]["error"].startswith(f"max_bytes: {huge.stat().st_size} bytes is over the limit of "
                                                f"{serving_config.limits.max_bytes} bytes")
    assert rows["empty.mp4"]["error"].startswith("empty: ")
    assert rows[good.name]["error"] == "" and rows[good.name]["class"]
    assert read == [str(good)]  # neither refused file was read
    assert time.monotonic() - t0 < 60


@pytest.mark.server
def test_classify_folder_with_bad_files_csv(triton_server, grpc_infer, serving_config, client_videos, tmp_path):
    out = tmp_path / "results.csv"
    rc = cli_main(["classify", str(client_videos["root"]), "--url", triton_server.grpc_url, "-o", str(out),
                   "--concurrency", "3", "--no-progress", "-q"])
    assert rc == 1  # two files failed
    rows = read_rows(out)
    by_path = {r["path"]: r for r in rows}
    assert len(rows) == len(by_path) == 6  # every file has a row
    readme = by_path[str(client_videos["root"] / "README.txt")]
    assert readme["skipped"].startswith("not a video file (.txt") and readme["error"] == "" and readme["class"] == ""
    classes = serving_config.classes
    for path in client_videos["good"]:
        row = by_path[str(path)]
        assert row["error"] == "" and row["attempts"] == "1"
        got = np.array([float(row[c]) for c in classes], dtype=np.float32)
        want = _direct(grpc_infer, path, serving_config)
        np.testing.assert_array_equal(got, want)  # the CSV keeps every bit of the float32
        assert row["class"] == classes[int(np.argmax(want))]
        assert float(row["latency_ms"]) > 0
    for key in ("corrupt", "fake"):
        row = by_path[str(client_videos[key])]
        assert row["class"] == "" and row[classes[0]] == ""
        assert row["error"] == _server_error(grpc_infer, client_videos[key]).strip()
        assert row["attempts"] == "1"  # a rejected input is never retried


@pytest.mark.server
def test_unknown_model_is_a_usage_error(triton_server, client_videos, tmp_path):
    out = tmp_path / "o.csv"
    rc = cli_main(["classify", str(client_videos["good"][0]), "--url", triton_server.grpc_url, "-o", str(out),
                   "--model", "no_such_model", "--no-progress", "-q"])
    assert rc == 2 and not out.exists()


@pytest.mark.server
def test_request_timeout_is_recorded_not_retried(triton_server, client_videos, tmp_path):
    summary = classify_paths([str(client_videos["good"][0])], triton_server.grpc_url, output=str(tmp_path / "t.csv"),
                             timeout=0.001, progress=False)
    (rec,) = summary.records
    assert rec["error"].startswith("timeout") and rec["attempts"] == 1 and summary.exit_code == 1


@pytest.mark.server
def test_jsonl_output_with_top_k(triton_server, grpc_infer, serving_config, client_videos, tmp_path):
    out = tmp_path / "results.jsonl"
    summary = classify_paths([str(p) for p in client_videos["good"]], triton_server.grpc_url, output=str(out),
                             top_k=2, progress=False)
    assert summary.exit_code == 0 and summary.classified == 3
    assert sum(summary.per_class.values()) == 3
    for rec in read_rows(out):
        want = _direct(grpc_infer, rec["path"], serving_config)
        got = np.array([rec[c] for c in serving_config.classes])
        np.testing.assert_allclose(got, want, atol=1e-6)  # the extension prints 6 decimals
        order = np.argsort(-want)[:2]
        assert [e["class"] for e in rec["top_k"]] == [serving_config.classes[i] for i in order]
        assert rec["class"] == serving_config.classes[order[0]]


@pytest.mark.server
def test_shared_memory_gives_identical_results(triton_server, client_videos, tmp_path):
    paths = [str(p) for p in client_videos["good"]] + [str(client_videos["fake"])]
    plain = classify_paths(paths, triton_server.grpc_url, output=str(tmp_path / "plain.csv"), progress=False)
    shm = classify_paths(paths, triton_server.grpc_url, output=str(tmp_path / "shm.csv"), shm=True, progress=False,
                         admin_key=triton_server.admin_key)
    def strip(rows):
        return sorted((r["path"], r["class"], *(r[c] for c in ("Animation", "Flat_Content", "Gaming",
                                                               "Natural_Content")), r["error"]) for r in rows)

    assert strip(shm.records) == strip(plain.records)
    assert shm.classified == 3 and shm.failed == 1
    # Every region was unregistered again.
    import tritonclient.grpc as grpcclient

    from vidcls.admin_access import grpc_headers

    with grpcclient.InferenceServerClient(triton_server.grpc_url) as c:
        status = c.get_system_shared_memory_status(headers=grpc_headers(triton_server.admin_key), as_json=True)
    assert not status.get("regions")


@pytest.mark.server
def test_resume_after_kill(triton_server, many_videos, tmp_path):
    folder = many_videos[0].parent
    out = tmp_path / "killed.csv"
    cmd = [sys.executable, "-m", "vidcls.cli", "classify", str(folder), "--url", triton_server.grpc_url,
           "-o", str(out), "--concurrency", "1", "--timeout", "60", "--no-progress", "-q"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and len(out.read_text().splitlines()) >= 1 + 3:  # header + 3 records
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)  # a crash: no clean-up at all
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = read_rows(out)
    assert 3 <= len(before) < len(many_videos)
    resumed = subprocess.run(cmd[:-1] + ["--resume"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"already in output {len(before)}" in resumed.stderr
    after = read_rows(out)
    paths = [r["path"] for r in after]
    assert len(paths) == len(set(paths)) == len(many_videos)  # none twice, none lost
    assert set(paths) == {str(p) for p in many_videos}
    assert after[: len(before)] == before  # records of the killed run kept as they were
    assert all(r["error"] == "" for r in after)
    # Resuming a finished output does nothing.
    assert subprocess.run(cmd + ["--resume"], cwd=REPO, capture_output=True, timeout=120).returncode == 0
    assert len(read_rows(out)) == len(many_videos)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_written_classes_read_back(tmp_path, suffix):
    out = tmp_path / f"r{suffix}"
    fmt = suffix[1:]
    with ResultWriter(str(out), fmt, fieldnames(("Cats", "Dogs"), top_k=True, evidence=True)) as w:
        w.write({"path": "a.mp4", "class": "Cats", "Cats": 0.75, "Dogs": 0.25, "top_k": None, "moments": None,
                 "view_probabilities": None, "latency_ms": 1.0, "error": "", "skipped": "", "attempts": 1,
                 "endpoint": "x"})
    assert written_classes(*load_done(out, fmt)) == ("Cats", "Dogs")
    assert written_classes({}, None) is None


@pytest.mark.server
def test_resume_refuses_an_output_of_another_class_set(triton_server, many_videos, tmp_path):
    """--resume onto a file written for other classes would mix two tables: one line, exit 2."""
    out = tmp_path / "other.csv"
    out.write_text("path,class,Cats,Dogs,latency_ms,error,skipped,attempts,endpoint\n"
                   "/x/a.mp4,Cats,0.75,0.25,1.0,,,1,e\n")
    before = out.read_text()
    proc = subprocess.run([sys.executable, "-m", "vidcls.cli", "classify", str(many_videos[0]), "--url",
                           triton_server.grpc_url, "-o", str(out), "--resume", "--no-progress"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "written with the classes Cats, Dogs" in lines[0], proc.stderr
    assert out.read_text() == before


@pytest.mark.server
def test_ctrl_c_says_how_to_resume(triton_server, many_videos, tmp_path):
    """Ctrl-C mid-run: exit 130, whole records so far, and one line saying how to continue."""
    out = tmp_path / "interrupted.jsonl"
    cmd = [sys.executable, "-m", "vidcls.cli", "classify", str(many_videos[0].parent), "--url", triton_server.grpc_url,
           "-o", str(out), "--concurrency", "1", "--no-progress", "-q"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and len(out.read_text().splitlines()) >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines == [f"interrupted; what finished is in {out}: the same command with --resume continues"], err
    assert 2 <= len(read_rows(out)) < len(many_videos)  # every line a whole record


@pytest.mark.server
def test_survives_server_restart(spare_server, many_videos, tmp_path):
    """The client runs in a thread and the main thread restarts the server mid-run: TritonServer
    gives the server a parent-death signal tied to the thread that started it, so the restart
    must come from a thread that outlives the server (here the main thread)."""
    out = tmp_path / "restart.jsonl"
    result: dict = {}

    def run_client():
        try:
            result["summary"] = classify_paths(
                [str(p) for p in many_videos], spare_server.grpc_url, output=str(out), concurrency=2,
                progress=False, retries=1000, retry_timeout=240, backoff=0.25, backoff_max=2.0)
        except BaseException as exc:  # reported below
            result["error"] = exc

    client = threading.Thread(target=run_client, daemon=True)
    client.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and client.is_alive():
        if out.exists() and len(out.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    assert client.is_alive(), "the run finished before the restart"
    spare_server.restart()  # same ports; takes several seconds
    client.join(300)
    assert not client.is_alive() and "error" not in result, result.get("error")
    summary = result["summary"]
    assert summary.failed == 0, summary.format()
    assert summary.classified == len(many_videos)
    assert summary.retries > 0  # the restart was felt, and ridden out
    rows = read_rows(out)
    assert len({r["path"] for r in rows}) == len(rows) == len(many_videos)


@pytest.mark.server
@pytest.mark.parametrize("policy", ["round-robin", "least-outstanding"])
def test_fleet_fails_over_from_dead_endpoint(triton_server, client_videos, dead_url, policy, tmp_path):
    paths = [str(p) for p in client_videos["good"]]
    summary = classify_paths(paths, [dead_url, triton_server.grpc_url], output=str(tmp_path / "f.csv"),
                             policy=policy, concurrency=2, progress=False, retries=3, backoff=0.05)
    assert summary.failed == 0 and summary.classified == len(paths)
    assert summary.per_endpoint == {dead_url: 0, triton_server.grpc_url: len(paths)}


@pytest.mark.server
def test_fleet_of_two_servers(triton_server, spare_server, many_videos, grpc_infer, serving_config, tmp_path):
    paths = [str(p) for p in many_videos[:8]]
    out = tmp_path / "fleet.csv"
    rc = cli_main(["classify", *paths, "--url", f"{triton_server.grpc_url},{spare_server.grpc_url}",
                   "--balance", "round-robin", "-o", str(out), "--concurrency", "2", "--no-progress", "-q"])
    assert rc == 0
    rows = read_rows(out)
    assert {r["endpoint"] for r in rows} == {triton_server.grpc_url, spare_server.grpc_url}
    for r in rows[:2]:
        want = _direct(grpc_infer, r["path"], serving_config)
        np.testing.assert_array_equal([np.float32(r[c]) for c in serving_config.classes], want)


@pytest.mark.server
def test_grpc_tls_end_to_end(cpu_repository, tls_certs, client_videos, grpc_infer, serving_config, tmp_path, capfd):
    from vidcls.launcher import TritonServer

    c = tls_certs
    tls_args = ["--grpc-use-ssl=true", "--grpc-use-ssl-mutual=true", f"--grpc-server-cert={c['server_cert']}",
                f"--grpc-server-key={c['server_key']}", f"--grpc-root-cert={c['ca']}"]
    paths = [str(p) for p in client_videos["good"][:2]]
    with TritonServer(cpu_repository, extra_args=tls_args, log_path=tmp_path / "tls.log") as server:
        out = tmp_path / "tls.csv"
        rc = cli_main(["classify", *paths, "--url", server.grpc_url, "-o", str(out), "--ssl",
                       "--root-cert", str(c["ca"]), "--client-cert", str(c["client_cert"]),
                       "--client-key", str(c["client_key"]), "--no-progress", "-q"])
        assert rc == 0
        for r in read_rows(out):
            want = _direct(grpc_infer, r["path"], serving_config)  # the plain session server
            np.testing.assert_array_equal([np.float32(r[k]) for k in serving_config.classes], want)
        # Plain text against the TLS port, and TLS without a client certificate, are refused: the
        # check before the run gets no answer, so nothing is sent and no output is written.
        for extra in ([], ["--ssl", "--root-cert", str(c["ca"])]):
            rc = cli_main(["classify", paths[0], "--url", server.grpc_url, "-o", str(tmp_path / f"no{len(extra)}.csv"),
                           "--retries", "0", "--timeout", "20", "--no-progress", "-q", *extra])
            assert rc == 1
            assert not (tmp_path / f"no{len(extra)}.csv").exists()
            err = capfd.readouterr().err.strip()
            assert err.startswith(f"error: no Triton server answers at {server.grpc_url} (") and "\n" not in err
            print(err)
