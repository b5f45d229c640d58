"""Repeated uploads: the model clients call answers a file seen before from its answer cache (keyed
by the SHA-256 of the bytes), never gives one file another file's answer, passes the pipeline's
errors on unchanged and never stores them, and skips the cache for requests that ask it to."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_serving import ATOL, _send_concurrently
from vidcls.answer_cache import AnswerCache, content_key
from vidcls.triton_models.cache import PipelineError, wants_cache


def test_lru_keeps_the_most_recent_answers_and_no_errors():
    cache = AnswerCache(2)
    for key in "abc":
        assert cache.lookup(key, None) == (None, True)
        cache.finish(key, key.upper())
    assert len(cache) == 2 and cache.lookup("a", None) == (None, True)  # "a" was dropped first
    cache.finish("a", ValueError("bad file"))  # errors are handed on, not stored
    assert cache.lookup("a", None) == (None, True)
    cache.finish("a", "A")
    assert cache.lookup("c", None) == ("C", False)
    assert cache.hits == 1 and cache.misses == 5
    off = AnswerCache(0)
    off.lookup("x", None)
    off.finish("x", "X")
    assert len(off) == 0 and off.lookup("x", None) == (None, True)


def test_requests_for_a_file_in_flight_wait_for_its_answer():
    cache = AnswerCache(4)
    got = []
    assert cache.lookup("k", got.append) == (None, True)  # the owner classifies it
    assert cache.lookup("k", got.append) == (None, False)  # these two wait
    assert cache.lookup("k", got.append) == (None, False)
    cache.finish("k", "answer")
    assert got == ["answer", "answer"] and cache.joined == 2
    assert cache.lookup("k", got.append) == ("answer", False)


def test_content_key_covers_every_byte_and_the_shape():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (1, 4096), dtype=np.uint8)
    b = a.copy()
    b[0, 2048] ^= 1
    assert content_key(a) == content_key(a.copy())
    assert content_key(a) != content_key(b)
    assert content_key(a) != content_key(a.reshape(2, 2048))
    assert len(content_key(a)) == 32  # SHA-256


def test_cache_parameter_and_pipeline_errors():
    assert wants_cache("", "answer_cache") and wants_cache('{"other": 1}', "answer_cache")
    for off in ('{"answer_cache": false}', '{"answer_cache": "false"}', {"answer_cache": 0}, {"answer_cache": "off"}):
        assert not wants_cache(off, "answer_cache"), off
    bad = PipelineError("in ensemble 'vidcls_pipeline', not_a_video: FFmpeg cannot read the container", "vidcls_pipeline")
    assert bad.message == "not_a_video: FFmpeg cannot read the container" and bad.invalid_argument
    internal = PipelineError("in ensemble 'vidcls_pipeline', internal: backbone failed: boom", "vidcls_pipeline")
    assert not internal.invalid_argument
    assert not PipelineError("unexpected shape for input 'VIDEO'", "vidcls_pipeline").invalid_argument


# ---- the real server ---------------------------------------------------------------------------------
def _pipeline_runs(server, config) -> int:
    import tritonclient.grpc as grpcclient

    from vidcls.admin_access import grpc_headers

    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        stats = client.get_inference_statistics(config.serving.probe, headers=grpc_headers(server.admin_key),
                                                as_json=True)["model_stats"]
    # Requests that entered the pipeline (its first step), answered with a result or an error.
    return sum(int(m["inference_stats"].get(k, {}).get("count", 0)) for m in stats for k in ("success", "fail"))


def _flip_one_byte(data: bytes) -> bytes:
    """The same file with one byte of coded picture data changed (the middle of the file)."""
    out = bytearray(data)
    out[len(out) // 2] ^= 0x10
    return bytes(out)


@pytest.mark.server
def test_repeated_file_is_answered_from_the_cache_and_other_files_never_share_it(
        triton_server, serving_config, reference_pipeline, video_factory):
    s, url = serving_config.serving, triton_server.grpc_url
    first = video_factory("cache_a.mp4", n=45, size=(128, 96), seed=21)
    other = video_factory("cache_b.mp4", n=45, size=(128, 96), seed=22)
    data = first.read_bytes()
    flipped = _flip_one_byte(data)  # same length, one byte apart: a different file
    assert len(flipped) == len(data) and flipped != data

    def answer(payload, **kw):
        (result,) = _send_concurrently(url, serving_config, [payload], **kw)
        assert not isinstance(result, Exception), result
        return result.as_numpy(s.probabilities)[0]

    runs = _pipeline_runs(triton_server, serving_config)
    want = reference_pipeline.classify(first)
    np.testing.assert_allclose(answer(first), want, atol=ATOL, rtol=0)
    assert _pipeline_runs(triton_server, serving_config) == runs + 1
    again = answer(data)  # the same bytes: from the cache, the pipeline does not run
    assert _pipeline_runs(triton_server, serving_config) == runs + 1
    np.testing.assert_array_equal(again, answer(first, answer_cache=False))  # ... and it is the pipeline's answer
    assert _pipeline_runs(triton_server, serving_config) == runs + 2  # asked off: the pipeline ran

    np.testing.assert_allclose(answer(other), reference_pipeline.classify(other), atol=ATOL, rtol=0)
    assert _pipeline_runs(triton_server, serving_config) == runs + 3
    (near,) = _send_concurrently(url, serving_config, [flipped])
    assert _pipeline_runs(triton_server, serving_config) == runs + 4  # one byte apart: not the cached answer
    if not isinstance(near, Exception):  # whatever the damaged picture decodes to, it is its own answer
        np.testing.assert_allclose(near.as_numpy(s.probabilities)[0], reference_pipeline.classify(flipped),
                                   atol=ATOL, rtol=0)
    assert not np.array_equal(answer(other), want)


@pytest.mark.server
def test_identical_requests_in_flight_run_the_pipeline_once(triton_server, serving_config, video_factory):
    s, url = serving_config.serving, triton_server.grpc_url
    video = video_factory("cache_flight.mp4", n=60, size=(160, 120), seed=23)
    runs = _pipeline_runs(triton_server, serving_config)
    results = _send_concurrently(url, serving_config, [video] * 4)
    assert _pipeline_runs(triton_server, serving_config) == runs + 1
    probs = [r.as_numpy(s.probabilities)[0] for r in results]
    assert all(np.array_equal(p, probs[0]) for p in probs)


@pytest.mark.server
def test_a_stored_answer_does_not_wait_for_pipeline_runs_in_flight(triton_server, serving_config, video_factory):
    """The front model hands pipeline runs to its event loop and returns: a hit that arrives while
    eight runs are in flight is answered before they end (it would be answered after them if the
    model waited for its pipeline calls)."""
    import threading
    import time

    url, s = triton_server.grpc_url, serving_config.serving
    cached = video_factory("cache_ready.mp4", n=30, size=(96, 64), seed=31)
    slow = video_factory("cache_slow.mp4", n=600, size=(320, 240), seed=32)  # seconds of work for 8
    assert not isinstance(_send_concurrently(url, serving_config, [cached])[0], Exception)
    finished: dict[str, float] = {}

    def in_flight(i):
        result = _send_concurrently(url, serving_config, [slow], answer_cache=False)[0]
        assert not isinstance(result, Exception), result
        finished[f"run{i}"] = time.monotonic()

    threads = [threading.Thread(target=in_flight, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # the eight are in flight (each client's call is sent within milliseconds)
    (hit,) = _send_concurrently(url, serving_config, [cached])
    finished["hit"] = time.monotonic()
    for t in threads:
        t.join(300)
    assert not isinstance(hit, Exception), hit
    assert len(finished) == 9 and finished["hit"] < max(v for k, v in finished.items() if k != "hit"), finished
    assert hit.as_numpy(s.class_name).size == 1


@pytest.mark.server
def test_errors_pass_through_with_their_code_and_are_not_stored(triton_server, serving_config):
    from tritonclient.utils import InferenceServerException

    url = triton_server.grpc_url
    garbage = np.random.default_rng(5).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    runs = _pipeline_runs(triton_server, serving_config)
    results = []
    for _ in range(2):
        (result,) = _send_concurrently(url, serving_config, [garbage])
        results.append(result)
    for result in results:
        assert isinstance(result, InferenceServerException), result
        assert result.status() == "StatusCode.INVALID_ARGUMENT", result.status()
        assert result.message().startswith("not_a_video: "), result.message()
    assert _pipeline_runs(triton_server, serving_config) == runs + 2  # the second was not answered from a cache


@pytest.mark.server
def test_cache_off_in_the_config_sends_every_request_through(cpu_repository, serving_config, tmp_path_factory,
                                                             h264_video):
    """serving.answer_cache_entries = 0: the same file twice runs the pipeline twice."""
    import dataclasses
    import shutil

    from tests.fixtures.serving import running_server
    from vidcls.config import VidclsConfig
    from vidcls.config import REPOSITORY_CONFIG_FILE as CONFIG_FILENAME

    repo = tmp_path_factory.mktemp("nocache") / "repo"
    shutil.copytree(cpu_repository, repo)
    config = VidclsConfig.load(repo / CONFIG_FILENAME)
    config.replace(serving=dataclasses.replace(config.serving, answer_cache_entries=0)).save(repo / CONFIG_FILENAME)
    gen = running_server(repo, tmp_path_factory, name="nocache")
    server = next(gen)
    try:
        for _ in range(2):
            runs = _pipeline_runs(server, serving_config)
            (result,) = _send_concurrently(server.grpc_url, serving_config, [h264_video])
            assert not isinstance(result, Exception), result
            assert _pipeline_runs(server, serving_config) == runs + 1
    finally:
        gen.close()
