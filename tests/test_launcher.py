"""``vidcls serve`` and the TritonServer launcher: ports, options, readiness, clean failures.

Unit tests pin the command line (Triton's usual ports by default, vidcls options anywhere,
tritonserver options only after ``--``) and the one-line cause read from a failed server's log.
Server tests (marked ``server``) start real tritonservers on free ports: a port in use is refused
before anything starts; a server that cannot bind never reports ready, even though another server
answers on that port; a failed start leaves nothing in /dev/shm; empty and wrong repositories fail
in one line.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

import vidcls.launcher as launcher
from vidcls.cli import command_parser
from vidcls.cli import main as cli_main
from vidcls.launcher import DEFAULT_PORTS, ServerError, TritonServer, error_cause, server_from_args

ROOT = Path(__file__).resolve().parents[1]


# ---- unit: the command line -----------------------------------------------------------------------
def test_serve_uses_tritons_usual_ports_and_zero_means_free(tmp_path):
    parser = command_parser("serve", launcher)
    server = server_from_args(parser.parse_args([str(tmp_path)]))
    assert DEFAULT_PORTS == {"grpc": 8001, "http": 8000, "metrics": 8002}
    assert (server.grpc_port, server.http_port, server.metrics_port) == (8001, 8000, 8002)
    # 0 = a free port, chosen at start (None until then)
    free = server_from_args(parser.parse_args([str(tmp_path), "--grpc-port", "0", "--http-port", "0",
                                               "--metrics-port", "0"]))
    assert (free.grpc_port, free.http_port, free.metrics_port) == (None, None, None)
    # the client's default address is where serve listens
    from vidcls.client.classify import DEFAULT_URL

    assert DEFAULT_URL == f"127.0.0.1:{server.grpc_port}"


def test_options_anywhere_and_tritonserver_options_after_double_dash(tmp_path, monkeypatch):
    """vidcls's own options work after the repository; only what follows '--' reaches tritonserver."""
    seen = {}

    def fake_run(args):
        seen["server"] = server_from_args(args)
        return 0

    monkeypatch.setattr(launcher, "run", fake_run)
    log = tmp_path / "x.log"
    assert cli_main(["serve", str(tmp_path), "--grpc-port", "9101", "--ready-timeout", "60",
                     "--log-file", str(log), "--", "--log-info=false", "--strict-model-config=false"]) == 0
    server = seen["server"]
    assert server.grpc_port == 9101 and server.ready_timeout == 60 and server.log_path == log
    assert server.extra_args == ["--log-info=false", "--strict-model-config=false"]


@pytest.mark.parametrize("argv, expected", [
    ([], "the following arguments are required: repo"),
    (["{tmp}", "--log-info=false"], "unrecognized arguments: --log-info=false; tritonserver's own options go after '--'"),
    (["{tmp}", "--grpc-port", "http"], "argument --grpc-port: expected a port number, got 'http'"),
    (["{tmp}", "--http-port", "70000"], "argument --http-port: a port is 0..65535"),
    (["/nonexistent/repo"], "argument repo: /nonexistent/repo does not exist"),
])
def test_bad_serve_command_lines_are_one_line_usage_errors(argv, expected, tmp_path, capfd):
    rc = cli_main(["serve", *[a.replace("{tmp}", str(tmp_path)) for a in argv]])
    err = capfd.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: ") and expected in err, err


def test_error_cause_names_what_failed():
    """Lines as tritonserver 2.51 writes them on this kind of machine: the harmless CPU errors are
    skipped; a failed model load wins over later consequences; a bind failure is the last error."""
    harmless = ('E1201 23:29:54.241705 17442 server.cc:241] "CudaDriverHelper has not been initialized."\n'
                'E1201 23:29:57.756101 17442 ensemble_scheduler.cc:1468] "unable to create stream for vidcls: '
                'CUDA driver version is insufficient for CUDA runtime version"\n')
    bind = harmless + ('E1201 23:29:57.811978 17442 main.cc:257] "failed to start HTTP service: Unavailable - '
                       'Socket \'127.0.0.1:48691\' already in use "\n')
    assert error_cause(bind) == "failed to start HTTP service: Unavailable - Socket '127.0.0.1:48691' already in use"
    load = harmless + "".join(
        f'E1201 23:30:13.896769 19649 model_lifecycle.cc:642] "failed to load \'{m}\' version 1: Invalid argument: '
        f'unable to find backend library for backend \'onnxruntime\', try specifying runtime on the model '
        f'configuration."\n' for m in ("backbone", "temporal_0")) + (
        'E1201 23:30:16.088753 19649 model_repository_manager.cc:703] "Invalid argument: ensemble \'vidcls\' '
        'depends on \'temporal_0\' which has no loaded version."\n')
    cause = error_cause(load)
    assert cause.startswith("failed to load 'backbone' version 1") and "(and 1 more models)" in cause
    assert "--target cpu" in cause
    assert error_cause(harmless) is None and error_cause("") is None


# ---- server: real tritonservers on free ports --------------------------------------------------------
def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.server
def test_port_in_use_is_refused_before_starting(cpu_repository, tmp_path, capfd):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        t0 = time.monotonic()
        rc = cli_main(["serve", str(cpu_repository), "--grpc-port", str(port), "--http-port", "0",
                       "--metrics-port", "0", "--log-file", str(tmp_path / "log")])
        captured = capfd.readouterr()
    assert rc == 1 and time.monotonic() - t0 < 5
    assert _one_line(captured.err).startswith(f"error: port {port} is in use (gRPC")
    assert "starting" not in captured.out and not (tmp_path / "log").exists()


@pytest.mark.server
def test_readiness_is_the_servers_own_and_a_failed_start_leaves_no_shared_memory(
        triton_server, cpu_repository, tmp_path, monkeypatch):
    """Another server answers on the HTTP port (the port check is bypassed, as in a race between
    two starts): the new server never counts as ready; it fails with the bind error in one line,
    and the shared-memory regions its python models had made are gone."""
    monkeypatch.setattr(launcher, "port_in_use", lambda host, port: False)
    second = TritonServer(cpu_repository, http_port=triton_server.http_port, log_path=tmp_path / "second.log",
                          ready_timeout=120)
    with pytest.raises(ServerError) as info:
        second.start()
    message = str(info.value)
    assert "\n" not in message and "failed to start HTTP service" in message and "already in use" in message
    log = (tmp_path / "second.log").read_text()
    assert "successfully loaded" in log  # its python models had started (and made regions) first
    assert second.shm_regions() == []
    assert triton_server.answers_as_itself() and not second.answers_as_itself()


@pytest.mark.server
def test_regions_of_a_killed_server_are_removed(cpu_repository, tmp_path):
    import os
    import signal

    server = TritonServer(cpu_repository, log_path=tmp_path / "log").start()
    assert server.shm_regions(), "the python backend made no regions under our prefix"
    os.killpg(server.pid, signal.SIGKILL)  # no clean shutdown: the stubs' regions stay behind
    time.sleep(1)
    server.stop()
    assert server.shm_regions() == []


@pytest.mark.server
def test_own_log_folder_is_made_at_start_and_removed_after_a_clean_stop(cpu_repository):
    """Without a log path the server logs into a folder of its own: none for a server never started,
    and none left after a clean stop (a failed start keeps its log for reading)."""
    never = TritonServer(cpu_repository)
    assert not never.log_path.parent.exists()
    with TritonServer(cpu_repository) as server:
        folder = server.log_path.parent
        assert folder.is_dir() and (folder.stat().st_mode & 0o777) == 0o700
        assert "successfully loaded" in server.log_path.read_text()
    assert not folder.exists()


@pytest.mark.server
def test_empty_parent_and_gpu_repositories_fail_in_one_line(cpu_repository, tmp_path, capfd):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli_main(["serve", str(empty), "--grpc-port", "0", "--http-port", "0", "--metrics-port", "0"]) == 1
    assert "is not a model repository" in _one_line(capfd.readouterr().err)
    parent = cpu_repository.parent
    assert cli_main(["serve", str(parent), "--grpc-port", "0", "--http-port", "0", "--metrics-port", "0"]) == 1
    assert f"did you mean {cpu_repository}" in _one_line(capfd.readouterr().err)
    # The checked-in gpu repository needs backends this tritonserver lacks: the cause, one line.
    t0 = time.monotonic()
    rc = cli_main(["serve", str(ROOT / "model_repository"), "--grpc-port", "0", "--http-port", "0",
                   "--metrics-port", "0", "--log-file", str(tmp_path / "gpu.log")])
    err = _one_line(capfd.readouterr().err)
    assert rc == 1 and time.monotonic() - t0 < 120
    assert "failed to load" in err and "--target cpu" in err and str(tmp_path / "gpu.log") in err
