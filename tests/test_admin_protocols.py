"""No network client can crash or reconfigure the server: the admin protocols need the operator key.

The probe is the attack seen on servers that left every protocol open: register one of the
server's own python-backend shared-memory regions, then ask for PROBABILITIES to be written into
it: tritonserver died with SIGSEGV. A server started without the restriction still dies from it
here (so the probe is real); servers started as users start them (``vidcls serve`` in a
subprocess, and :class:`~vidcls.launcher.TritonServer`, which tests, demo and benchmarks use)
refuse it, and refuse changes of logging and trace settings, statistics and the model repository,
over gRPC and HTTP, without the key, and keep answering inferences; with the key the same calls
succeed. ``classify --shm`` with the key classifies exactly as without shared memory; without it
the refusal is one line. Units: the key files, where clients and servers find the key, the
container wrapper, and that the two protocol groups cover every protocol tritonserver knows.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.serving import lines_until_ready
from vidcls import admin_access
from vidcls.admin_access import (ENV_KEY, ENV_KEY_FILE, HEADER, OPEN, RESTRICTED, AdminKeyError, client_key,
                                 grpc_headers, http_headers, is_loopback, refused, server_args, server_key)

ROOT = Path(__file__).resolve().parents[1]
PROBE_BYTES = 4096


# ---- units -------------------------------------------------------------------------------------
def test_the_two_groups_cover_every_protocol_tritonserver_knows():
    """A protocol a newer tritonserver adds must be put in one group on purpose, not left open."""
    from vidcls.launcher import TritonServer, server_home

    try:
        home = server_home()
        env = TritonServer(ROOT).environment()
    except Exception as exc:
        pytest.skip(f"no tritonserver here: {exc}")
    proc = subprocess.run([str(home / "bin" / "tritonserver"), "--help"], env=env, capture_output=True, text=True,
                          timeout=60)
    text = proc.stdout + proc.stderr
    found = re.search(r"--grpc-restricted-protocol.*?Allowed protocols:\s*([a-z\-,\s]+?)\n\s*\n", text, re.S)
    assert found, text[-2000:]
    known = {p.strip() for p in found.group(1).split(",")}
    assert known == set(RESTRICTED) | set(OPEN) and not set(RESTRICTED) & set(OPEN), known
    assert {"shared-memory", "model-repository", "trace", "logging", "statistics"} <= set(RESTRICTED)
    assert {"inference", "health", "metadata"} <= set(OPEN)


def test_server_args_and_headers():
    key = "k" * 20
    group = f"{','.join(RESTRICTED)}:{HEADER}={key}"  # ':' before the header: the binary refuses ','
    assert server_args(key) == [f"--grpc-restricted-protocol={group}", f"--http-restricted-api={group}"]
    assert grpc_headers(key) == {f"triton-grpc-protocol-{HEADER}": key} and grpc_headers(None) is None
    assert http_headers(key) == {HEADER: key} and http_headers(None) == {}
    for bad in ("short", "has space in it here", "colon:inside-the-key-x", "equals=inside-the-key", "x" * 15):
        with pytest.raises(AdminKeyError):
            server_args(bad)


def test_key_files_are_private_and_never_overwritten(tmp_path):
    path = tmp_path / "deep" / "admin.key"
    key = admin_access.write_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and admin_access.read_key_file(path) == key
    assert len(key) >= 40 and key != admin_access.write_key_file(tmp_path / "other.key")
    with pytest.raises(AdminKeyError):
        admin_access.write_key_file(path)
    assert admin_access.read_key_file(path) == key


def test_where_serve_and_clients_find_the_key(tmp_path, monkeypatch):
    default = tmp_path / "config" / "admin.key"
    monkeypatch.setenv(ENV_KEY_FILE, str(default))
    monkeypatch.delenv(ENV_KEY, raising=False)
    # A client has no key until one exists; vidcls serve makes the default file, then reuses it.
    assert client_key(None, ["127.0.0.1:8001"]) is None
    key, source = server_key()
    assert default.exists() and "new" in source and server_key() == (key, str(default))
    # The local file goes only to servers on this machine, never elsewhere unasked.
    assert client_key(None, ["127.0.0.1:8001", "[::1]:8001", "localhost:8001"]) == key
    assert client_key(None, ["127.0.0.1:8001", "10.0.0.5:8001"]) is None
    assert client_key(None, []) is None
    # $VIDCLS_ADMIN_KEY wins over the file for both; an explicit file wins over everything.
    monkeypatch.setenv(ENV_KEY, "e" * 32)
    assert server_key() == ("e" * 32, f"${ENV_KEY}") and client_key(None, ["10.0.0.5:8001"]) == "e" * 32
    other = tmp_path / "given.key"
    made, _ = server_key(other)
    assert made != "e" * 32 and client_key(other, ["10.0.0.5:8001"]) == made
    with pytest.raises(AdminKeyError, match="cannot read"):
        client_key(tmp_path / "missing.key")
    (tmp_path / "bad.key").write_text("short\n")
    with pytest.raises(AdminKeyError, match="at least 16"):
        server_key(tmp_path / "bad.key")


@pytest.mark.parametrize("url, local", [("127.0.0.1:8001", True), ("127.3.4.5:1", True), ("localhost:8001", True),
                                        ("[::1]:8001", True), ("::1", True), ("10.1.2.3:8001", False),
                                        ("vidcls-triton:8001", False), ("[2001:db8::1]:8001", False)])
def test_is_loopback(url, local):
    assert is_loopback(url) is local


def test_container_wrapper_refuses_to_start_without_a_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in (ENV_KEY, ENV_KEY_FILE)}
    show = [sys.executable, "-c", "import sys, json; print(json.dumps(sys.argv[1:]))"]
    proc = subprocess.run([sys.executable, "-m", "vidcls.admin_access", "exec", "--", *show, "--x=1"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: no operator key"), proc.stderr
    # With a key (variable or file) it execs the command with the restriction appended.
    for extra in ({ENV_KEY: "v" * 24}, {ENV_KEY_FILE: str(tmp_path / "k")}):
        if ENV_KEY_FILE in extra:
            (tmp_path / "k").write_text("f" * 24 + "\n")
            os.chmod(tmp_path / "k", 0o600)
        proc = subprocess.run([sys.executable, "-m", "vidcls.admin_access", "exec", "--", *show, "--x=1"],
                              env={**env, **extra}, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        key = extra.get(ENV_KEY) or "f" * 24
        assert json.loads(proc.stdout) == ["--x=1", *server_args(key)]


# A tritonserver argv element (Python lists, Dockerfile exec form, YAML lists) or its binary's path.
_STARTS_TRITON = re.compile(r"""["']tritonserver["']\s*[,\]]|/\s*["']tritonserver["']\s*\)|^\s*-\s*tritonserver\s*$""", re.M)


def test_every_place_that_starts_tritonserver_restricts_the_admin_protocols():
    """The launcher, the image, compose (through the image), Kubernetes and the GPU benchmark:
    a new way to start tritonserver must go through vidcls.admin_access too."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    starters = []
    for rel in files:
        if not (rel.endswith((".py", ".yaml", ".yml")) or Path(rel).name.startswith("Dockerfile")):
            continue
        text = (ROOT / rel).read_text(errors="replace")
        if _STARTS_TRITON.search(text):
            starters.append(rel)
            assert "admin_access" in text, f"{rel} starts tritonserver without vidcls.admin_access"
    assert {"vidcls/launcher.py", "docker/Dockerfile.triton", "deploy/k8s/base/deployment.yaml",
            "benchmarks/gpu_bench.py"} <= set(starters), starters


# ---- the probe ---------------------------------------------------------------------------------
def _http(url: str, path: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{url}{path}", data=data, method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _infer(grpc_url: str, video: Path, config, into_region: str | None = None) -> np.ndarray:
    """One inference (past the answer cache); with ``into_region`` PROBABILITIES go into that
    registered shared-memory region, as the attack asks."""
    import tritonclient.grpc as grpcclient

    s = config.serving
    data = np.frombuffer(video.read_bytes(), np.uint8)[None]
    with grpcclient.InferenceServerClient(grpc_url) as client:
        inp = grpcclient.InferInput(s.video, list(data.shape), "UINT8")
        inp.set_data_from_numpy(data)
        out = grpcclient.InferRequestedOutput(s.probabilities)
        if into_region:
            out.set_shared_memory(into_region, 4 * config.num_classes)
        result = client.infer(s.ensemble, [inp], outputs=[out], parameters={s.cache_parameter: False},
                              client_timeout=120)
    return result.as_numpy(s.probabilities)


def _mapped_regions(pid: int) -> list[str]:
    """The /dev/shm regions a process maps: tritonserver maps its python stubs' regions."""
    lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return sorted({line.split("/dev/shm/", 1)[1].strip() for line in lines if "/dev/shm/" in line})


def _grpc_admin_calls(client, region: str, key: str | None) -> dict:
    """Each admin call over gRPC → None when it went through, else the error message."""
    headers = grpc_headers(key)
    calls = {
        "register the server's own region": lambda: client.register_system_shared_memory(
            "probe", f"/{region}", PROBE_BYTES, headers=headers),
        "log settings": lambda: client.update_log_settings({"log_verbose_level": 0}, headers=headers),
        "trace settings": lambda: client.update_trace_settings(
            settings={"trace_rate": client.get_trace_settings(headers=headers, as_json=True)["settings"]
                      ["trace_rate"]["value"][0]}, headers=headers),
        "statistics": lambda: client.get_inference_statistics(headers=headers),
        "repository index": lambda: client.get_model_repository_index(headers=headers),
    }
    out = {}
    for name, call in calls.items():
        try:
            call()
            out[name] = None
        except Exception as exc:
            out[name] = (exc.message() if hasattr(exc, "message") else None) or str(exc)
    return out


def _http_admin_calls(url: str, region: str, key: str | None) -> dict:
    """Each admin call over HTTP → (status, body)."""
    headers = http_headers(key)
    return {
        "register the server's own region": _http(url, "/v2/systemsharedmemory/region/probe_http/register",
                                                  {"key": f"/{region}", "offset": 0, "byte_size": PROBE_BYTES},
                                                  headers),
        "log settings": _http(url, "/v2/logging", {"log_verbose_level": 0}, headers),
        "trace settings": _http(url, "/v2/trace/setting", {"trace_rate": "1000"}, headers),
        "statistics": _http(url, "/v2/models/stats", None, headers),
        "repository index": _http(url, "/v2/repository/index", {}, headers),
    }


def _probe_is_refused_then_allowed_with_the_key(grpc_url: str, http_url: str, regions: list[str], key: str,
                                                video: Path, config, running) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    assert regions, "the server maps no python-backend regions"
    before = _infer(grpc_url, video, config)
    with grpcclient.InferenceServerClient(grpc_url) as client:
        # Without the key, and with a wrong one: every admin call is refused, every region.
        for sent in (None, "w" * 32):
            for region in regions:
                answers = _grpc_admin_calls(client, region, sent)
                assert all(msg is not None and refused(msg) for msg in answers.values()), answers
                answers = _http_admin_calls(http_url, region, sent)
                assert all(code == 403 and refused(body) for code, body in answers.values()), answers
            # The attack's inference: the region was never registered, so nothing is written.
            with pytest.raises(InferenceServerException):
                _infer(grpc_url, video, config, into_region="probe")
        assert running()
        np.testing.assert_array_equal(_infer(grpc_url, video, config), before)
        assert client.get_log_settings(headers=grpc_headers(key), as_json=True)["settings"][
            "log_verbose_level"]["uint32_param"] == 0
        # With the key the same calls go through (the region is unregistered at once: writing into
        # it is exactly what crashes the server, and the operator is trusted not to).
        try:
            answers = _grpc_admin_calls(client, regions[0], key)
            assert all(msg is None for msg in answers.values()), answers
            status = client.get_system_shared_memory_status(headers=grpc_headers(key), as_json=True)
            assert status["regions"]["probe"]["key"] == f"/{regions[0]}"
        finally:
            client.unregister_system_shared_memory(headers=grpc_headers(key))
        try:
            answers = _http_admin_calls(http_url, regions[0], key)
            assert all(code == 200 for code, _ in answers.values()), answers
        finally:
            _http(http_url, "/v2/systemsharedmemory/unregister", {}, http_headers(key))
        assert not client.get_system_shared_memory_status(headers=grpc_headers(key), as_json=True).get("regions")
    assert running()
    np.testing.assert_array_equal(_infer(grpc_url, video, config), before)


@pytest.mark.server
def test_the_probe_crashes_a_server_started_without_the_restriction(cpu_repository, serving_config, h264_video,
                                                                    tmp_path):
    """The test below would catch a regression: the same probe kills an unrestricted server."""
    import tritonclient.grpc as grpcclient

    from vidcls.launcher import TritonServer

    class Unrestricted(TritonServer):  # the launcher as it was: every protocol open
        def command(self):
            return [a for a in super().command()
                    if not a.startswith(("--grpc-restricted-protocol", "--http-restricted-api"))]

    server = Unrestricted(cpu_repository, log_path=tmp_path / "open.log", ready_timeout=180).start()
    try:
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            for i, region in enumerate(_mapped_regions(server.pid)):
                client.register_system_shared_memory(f"x{i}", f"/{region}", PROBE_BYTES)
                try:
                    _infer(server.grpc_url, h264_video, serving_config, into_region=f"x{i}")
                    _infer(server.grpc_url, h264_video, serving_config)
                except Exception:
                    pass
                deadline = time.monotonic() + 5
                while server.running() and time.monotonic() < deadline:
                    time.sleep(0.1)
                if not server.running():
                    break
        assert not server.running(), "the probe no longer crashes an unrestricted server"
        assert server._proc.returncode == -signal.SIGSEGV
    finally:
        server.stop()


@pytest.mark.server
def test_triton_server_refuses_the_probe_without_the_key(triton_server, serving_config, h264_video):
    """TritonServer (tests, demo, benchmarks): over gRPC and HTTP."""
    _probe_is_refused_then_allowed_with_the_key(triton_server.grpc_url, triton_server.http_url,
                                                _mapped_regions(triton_server.pid), triton_server.admin_key,
                                                h264_video, serving_config, triton_server.running)


@pytest.mark.server
def test_vidcls_serve_refuses_the_probe_without_the_key(cpu_repository, serving_config, h264_video, tmp_path):
    """`vidcls serve` as a user runs it: it makes the key file it is told about (mode 0600) and says
    where; the probe is refused over gRPC and HTTP without it and goes through with it."""
    key_file = tmp_path / "keys" / "admin.key"
    proc = subprocess.Popen([sys.executable, "-m", "vidcls.cli", "serve", str(cpu_repository),
                             "--admin-key-file", str(key_file), "--log-file", str(tmp_path / "serve.log"),
                             "--grpc-port", "0", "--http-port", "0", "--metrics-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        lines = lines_until_ready(proc)
        said = [ln for ln in lines if ln.startswith("operator key:")]
        assert said and str(key_file) in said[0] and "new" in said[0], lines
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text().strip()
        assert key not in "".join(lines) and key not in (tmp_path / "serve.log").read_text()
        fields = lines[-1].split()
        grpc_url, http_url, pid = fields[2], fields[4].removeprefix("http://"), int(fields[-1])
        _probe_is_refused_then_allowed_with_the_key(grpc_url, http_url, _mapped_regions(pid), key, h264_video,
                                                    serving_config, lambda: proc.poll() is None)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


# ---- our clients with the key -------------------------------------------------------------------
def _rows(path: Path) -> list[tuple]:
    import csv

    with open(path, newline="") as f:
        return sorted((r["path"], r["class"], *(r[c] for c in ("Animation", "Flat_Content", "Gaming",
                                                               "Natural_Content")), r["error"])
                      for r in csv.DictReader(f))


@pytest.mark.server
def test_classify_shm_with_the_key_equals_classify_without_shm(triton_server, admin_key_file, client_videos,
                                                                tmp_path, capfd):
    from vidcls.cli import main

    videos = [str(p) for p in client_videos["good"]]
    base = ["classify", *videos, "--url", triton_server.grpc_url, "--no-progress", "-q", "--no-answer-cache"]
    assert main([*base, "-o", str(tmp_path / "plain.csv")]) == 0
    assert main([*base, "-o", str(tmp_path / "shm.csv"), "--shm", "--admin-key-file", str(admin_key_file)]) == 0
    plain = _rows(tmp_path / "plain.csv")
    assert len(plain) == 3 and _rows(tmp_path / "shm.csv") == plain  # the same digits, not close ones
    capfd.readouterr()
    # Without the key (and with a wrong one): one line saying what to do, before any file is sent.
    wrong = tmp_path / "wrong.key"
    admin_access.write_key_file(wrong)
    for extra, how in (([], "without an operator key"), (["--admin-key-file", str(wrong)], "with a wrong operator key")):
        out = tmp_path / f"refused{len(extra)}.csv"
        assert main([*base, "-o", str(out), "--shm", *extra]) == 2
        err = capfd.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and how in err and "--admin-key-file" in err, err
        assert not out.exists() or _rows(out) == []
    assert triton_server.running()


@pytest.mark.server
def test_bench_without_the_key_says_what_to_do(triton_server, client_videos, tmp_path, capfd):
    from vidcls.cli import main
    from vidcls.client.perf import PerfError, find_perf_analyzer

    try:
        find_perf_analyzer()
    except PerfError as exc:
        pytest.skip(f"perf_analyzer is not installed (make tools): {exc}")
    rc = main(["bench", "--url", triton_server.grpc_url, str(client_videos["good"][0]), "-o", str(tmp_path / "b")])
    err = capfd.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("error: ") and "statistics" in err[-1] and "--admin-key-file" in err[-1], err
    assert not (tmp_path / "b" / "perf.csv").exists()


@pytest.mark.server
def test_bench_passes_the_key_to_perf_analyzer_for_shared_memory(triton_server, admin_key_file, client_videos,
                                                                 tmp_path):
    """perf_analyzer registers its input regions and reads statistics with the key (-H)."""
    from vidcls.cli import main
    from vidcls.client.perf import PerfError, find_perf_analyzer, read_perf_csv

    try:
        find_perf_analyzer()
    except PerfError as exc:
        pytest.skip(f"perf_analyzer is not installed (make tools): {exc}")
    out = tmp_path / "b"
    rc = main(["bench", "--url", triton_server.grpc_url, str(client_videos["good"][1]), "-o", str(out),
               "--admin-key-file", str(admin_key_file), "--shared-memory", "system", "--concurrency-range", "1:1",
               "--measurement-mode", "count_windows", "--measurement-request-count", "3",
               "--stability-percentage", "1000", "--max-trials", "3"])
    assert rc == 0, (out / "perf_analyzer.log").read_text()[-3000:] if (out / "perf_analyzer.log").exists() else ""
    assert read_perf_csv(out / "perf.csv")[0]["Inferences/Second"] > 0
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        status = client.get_system_shared_memory_status(headers=grpc_headers(triton_server.admin_key), as_json=True)
    assert not status.get("regions"), "perf_analyzer left regions registered"
