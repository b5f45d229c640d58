"""The served ensemble equals the PyTorch reference, batches across requests, isolates bad requests.

Integration tests (marked ``server``) use the real tritonserver of tests/fixtures/serving.py on a
cpu repository of tiny random-init models. Parity tolerance: atol 1e-5 on the probabilities (ONNX
Runtime vs PyTorch float32; measured differences are ~1e-7).

The unit tests at the end drive the python-backend model classes with a stand-in for
``triton_python_backend_utils`` (which exists only inside Triton's stub), to pin down per-request
error isolation without a server.
"""

from __future__ import annotations

import queue
import sys
import time
import types

import numpy as np
import pytest

ATOL = 1e-5


@pytest.fixture(scope="session")
def concurrent_videos(video_factory):
    """Real H.264 and VP9 files of different sizes and lengths (shorter and longer than T)."""
    return [
        video_factory("s_h264_a.mp4", n=40, size=(160, 120), seed=1),
        video_factory("s_h264_b.mp4", n=9, size=(96, 64), seed=2),  # fewer frames than T: repeats
        video_factory("s_h264_c.mp4", n=75, size=(128, 96), seed=3),
        video_factory("s_h264_d.mp4", n=33, size=(200, 150), seed=4),
        video_factory("s_h264_e.mp4", n=50, size=(64, 48), seed=5),
        video_factory("s_vp9_a.webm", n=30, size=(176, 144), codec="libvpx-vp9", seed=6),
        video_factory("s_vp9_b.webm", n=20, size=(96, 96), codec="libvpx-vp9", seed=7),
    ]


def _send_concurrently(url, config, payloads, class_count=0, answer_cache=True):
    """All payloads in flight at once (async gRPC); returns one (result | exception) per payload.
    ``answer_cache=False`` asks the server to run the pipeline even for files it answered before."""
    import tritonclient.grpc as grpcclient

    from tests.fixtures.serving import video_bytes

    s = config.serving
    parameters = None if answer_cache else {s.cache_parameter: False}
    done: queue.Queue = queue.Queue()
    with grpcclient.InferenceServerClient(url) as client:
        for i, payload in enumerate(payloads):
            data = video_bytes(payload)
            inp = grpcclient.InferInput(s.video, list(data.shape), "UINT8")
            inp.set_data_from_numpy(data)
            outputs = [grpcclient.InferRequestedOutput(s.probabilities, class_count=class_count),
                       grpcclient.InferRequestedOutput(s.class_name)]
            client.async_infer(s.ensemble, [inp], callback=lambda result, error, i=i: done.put((i, result, error)),
                               outputs=outputs, client_timeout=120, parameters=parameters)
        results = {}
        for _ in payloads:
            i, result, error = done.get(timeout=120)
            results[i] = error if error is not None else result
    return [results[i] for i in range(len(payloads))]


@pytest.mark.server
def test_concurrent_requests_equal_reference_and_bad_one_is_isolated(
        triton_server, serving_config, reference_pipeline, concurrent_videos):
    from tritonclient.utils import InferenceServerException

    s = serving_config.serving
    garbage = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    payloads = concurrent_videos[:4] + [garbage] + concurrent_videos[4:]  # the bad one mid-batch
    results = _send_concurrently(triton_server.grpc_url, serving_config, payloads)

    bad = results[4]
    assert isinstance(bad, InferenceServerException), bad
    assert "not_a_video" in bad.message(), bad.message()
    good = results[:4] + results[5:]
    for path, result in zip(concurrent_videos, good):
        assert not isinstance(result, Exception), f"{path.name}: {result}"
        probs = result.as_numpy(s.probabilities)
        assert probs.shape == (1, serving_config.num_classes) and probs.dtype == np.float32
        expected = reference_pipeline.classify(path)
        np.testing.assert_allclose(probs[0], expected, atol=ATOL, rtol=0, err_msg=path.name)
        name = result.as_numpy(s.class_name)[0, 0].decode()
        assert name == serving_config.classes[int(np.argmax(probs[0]))]
    assert triton_server.running()
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        assert client.is_server_ready()


@pytest.mark.server
def test_classification_extension_returns_names(triton_server, serving_config, grpc_infer, h264_video):
    result = grpc_infer(h264_video, class_count=2)
    top = [e.decode().split(":") for e in result.as_numpy(serving_config.serving.probabilities)[0]]
    assert len(top) == 2
    scores = [float(score) for score, _, _ in top]
    assert scores == sorted(scores, reverse=True)
    for _, index, label in top:
        assert label == serving_config.classes[int(index)]


@pytest.mark.server
def test_requests_are_batched_server_side(triton_server, serving_config, concurrent_videos):
    """After concurrent traffic some model ran fewer executions than it served requests."""
    import tritonclient.grpc as grpcclient

    # Files answered before: the pipeline must see them anyway to batch them.
    _send_concurrently(triton_server.grpc_url, serving_config, concurrent_videos * 2, answer_cache=False)
    from vidcls.admin_access import grpc_headers

    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        stats = client.get_inference_statistics(headers=grpc_headers(triton_server.admin_key), as_json=True)["model_stats"]
    batched = {m["name"]: (int(m.get("inference_count", 0)), int(m.get("execution_count", 0)))
               for m in stats if int(m.get("execution_count", 0)) < int(m.get("inference_count", 0))}
    assert batched, f"no model batched requests: {stats}"
    # VIDEO is ragged (files differ in size): the steps that take it must batch too.
    s = serving_config.serving
    assert {s.probe, s.decode} & set(batched), f"different-size files were not batched: {batched}"


@pytest.mark.server
def test_limit_error_names_the_limit(triton_server, grpc_infer):
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as info:
        grpc_infer(b"")
    assert "empty" in info.value.message()
    assert triton_server.running()


# ---- python models without a server --------------------------------------------------------------
class _Tensor:
    def __init__(self, name, array):
        self.name, self.array = name, np.asarray(array)

    def as_numpy(self):
        return self.array


class _Error:
    INVALID_ARG, INTERNAL = "INVALID_ARG", "INTERNAL"

    def __init__(self, message, code=None):
        self.message, self.code = message, code


class _Response:
    def __init__(self, output_tensors=None, error=None):
        self.outputs = {t.name: t.array for t in output_tensors or []}
        self.error = error


@pytest.fixture
def fake_pb(monkeypatch):
    """A stand-in for triton_python_backend_utils with just what vidcls.triton_models uses."""
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = _Tensor
    module.TritonError = _Error
    module.InferenceResponse = _Response
    module.get_input_tensor_by_name = lambda request, name: _Tensor(name, request[name]) if name in request else None
    module.triton_string_to_numpy = lambda t: {"TYPE_FP32": np.float32, "TYPE_INT32": np.int32,
                                               "TYPE_UINT8": np.uint8, "TYPE_STRING": np.object_}[t]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", module)
    return module


def _load(cls, role, repo, name):
    import json

    from google.protobuf import json_format

    from vidcls.export.repository import load_configs

    cfg = load_configs(repo)[name]
    model = cls()
    model.initialize({"model_config": json.dumps(json_format.MessageToDict(cfg, preserving_proto_field_name=True)),
                      "model_name": name, "model_repository": str(repo / name), "model_version": "1"})
    return model


def test_probe_errors_only_the_bad_request(fake_pb, cpu_repository, serving_config, h264_video):
    from vidcls.triton_models.probe import ProbeModel

    s = serving_config.serving
    model = _load(ProbeModel, "probe", cpu_repository, s.probe)
    good = {s.video: np.frombuffer(h264_video.read_bytes(), np.uint8)[None]}
    responses = model.execute([good, {s.video: np.zeros((1, 100), np.uint8)}, {}, good])
    assert responses[0].error is None and responses[3].error is None
    assert responses[0].outputs[s.frame_indices].shape == (1, serving_config.num_frames)
    assert responses[1].error.code == "INVALID_ARG" and responses[1].error.message.startswith("not_a_video")
    assert responses[2].error.message.startswith("missing_input")


def test_unexpected_exception_fails_only_its_request(fake_pb, cpu_repository, serving_config):
    """A malformed tensor makes the batched computation raise: the others are retried alone."""
    from vidcls.triton_models.average import AverageModel

    s = serving_config.serving
    model = _load(AverageModel, "average", cpu_repository, s.average)
    c = serving_config.num_classes
    good = {n: np.full((1, c), 1.0 / c, np.float32) for n in serving_config.average_inputs()}
    lengths = [serving_config.view_lengths[v] for v in serving_config.tta_views] * serving_config.num_models
    good.update({n: np.full((1, n_rows), 1.0 / n_rows, np.float32)
                 for n, n_rows in zip(serving_config.average_inputs(s.attention), lengths)})
    broken = dict(good)
    broken[serving_config.average_inputs()[0]] = np.zeros((1, c + 1), np.float32)
    responses = model.execute([good, broken, good])
    assert responses[1].error.code == "INTERNAL" and s.average in responses[1].error.message
    for r in (responses[0], responses[2]):
        assert r.error is None
        np.testing.assert_allclose(r.outputs[s.probabilities], np.full((1, c), 1.0 / c))
        assert r.outputs[s.class_name].shape == (1, 1)


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])
def test_interrupts_are_not_answered_as_request_errors(fake_pb, cpu_repository, serving_config, stop):
    """Only Exception becomes a request's error: an interrupt or exit of the stub passes through."""
    from vidcls.triton_models.average import AverageModel

    model = _load(AverageModel, "average", cpu_repository, serving_config.serving.average)
    good = {n: np.zeros((1, 1), np.float32) for n in model.inputs}  # never read: process stops first

    def stopped(batch):
        raise stop()

    model.process = stopped
    with pytest.raises(stop):
        model.execute([good, good])


@pytest.mark.server
def test_vidcls_serve_prints_addresses_and_stops_on_sigterm(cpu_repository, serving_config, tmp_path):
    """The CLI: ready line with the addresses, models answer, SIGTERM stops the whole process group."""
    import os
    import signal
    import subprocess

    import tritonclient.grpc as grpcclient

    # Options after the repository are vidcls's own (the log goes where --log-file says); free
    # ports (0), so that this test never collides with another server on Triton's usual ones.
    proc = subprocess.Popen([sys.executable, "-m", "vidcls.cli", "serve", str(cpu_repository),
                             "--log-file", str(tmp_path / "serve.log"),
                             "--grpc-port", "0", "--http-port", "0", "--metrics-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        from tests.fixtures.serving import lines_until_ready

        lines = lines_until_ready(proc)
        assert f"log: {tmp_path / 'serve.log'}" in lines[0] and (tmp_path / "serve.log").stat().st_size > 0
        grpc_url = lines[-1].split()[2]
        assert grpc_url.startswith("127.0.0.1:")
        with grpcclient.InferenceServerClient(grpc_url) as client:
            assert client.is_model_ready(serving_config.serving.ensemble)
        server_pid = int(lines[-1].split()[-1])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        with pytest.raises(ProcessLookupError):
            os.kill(server_pid, 0)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.server
def test_liveness_by_inference_sees_a_dead_python_stub(cpu_repository, tmp_path_factory, tmp_path):
    """/v2/health/live keeps answering OK when a python model's stub dies (the server does not
    restart it); the liveness check of the deployment (an inference) fails, so the pod restarts."""
    import os
    import signal
    import urllib.request

    from tests.fixtures.serving import running_server
    from vidcls.healthcheck import main as liveness

    gen = running_server(cpu_repository, tmp_path_factory, name="liveness")
    server = next(gen)
    try:
        video, url = str(tmp_path / "live.mp4"), f"http://{server.http_url}"
        assert liveness(["--url", url, "--video", video]) == 0
        stubs = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"triton_python_backend_stub") and any(b"video_probe" in c for c in cmd):
                try:  # only this server's stubs (its process group), never another server's
                    if os.getpgid(int(pid)) == server.pid:
                        stubs.append(int(pid))
                except ProcessLookupError:
                    pass
        assert stubs, "no python stub of video_probe found"
        for pid in stubs:
            os.kill(pid, signal.SIGKILL)
        time.sleep(2)
        with urllib.request.urlopen(f"{url}/v2/health/live", timeout=5) as r:
            assert r.status == 200  # the server process still says it is alive
        assert liveness(["--url", url, "--video", video, "--timeout", "20"]) == 1
    finally:
        gen.close()
