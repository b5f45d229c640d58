"""Hostile and odd inputs: every corpus case gets its expected outcome, never a crash or hang.

Unit level here: ``vidcls.video`` directly. The server level (the same corpus through the real
Triton ensemble) is further down, marked ``server``.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from vidcls.video import VideoError, decode_frames, load_frames, probe
from vidcls.sampling import sample_indices

from tests.fixtures.bad_inputs import CORPUS_LIMITS, corpus_config

# Per case, generous for a 2-core machine shared with other jobs; a hang would be far longer.
CASE_SECONDS = 10.0


def _outcome(data_or_path, config):
    try:
        frames, info = load_frames(data_or_path, config)
    except VideoError as exc:
        return exc.code, exc, None
    return None, None, (frames, info)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("as_bytes", [False, True], ids=["path", "bytes"])
def test_every_corpus_case_gets_its_expected_outcome(bad_input_corpus, as_bytes):
    config = corpus_config()
    mismatches = []
    for case in bad_input_corpus:
        start = time.monotonic()
        # Anything but VideoError escaping here is a crash: let it fail the test with its traceback.
        code, exc, result = _outcome(case.data if as_bytes else case.path, config)
        elapsed = time.monotonic() - start
        if elapsed > CASE_SECONDS:
            mismatches.append(f"{case.name}: took {elapsed:.1f} s")
        if code != case.expect:
            mismatches.append(f"{case.name} ({case.why}): expected {case.expect or 'a valid result'}, "
                              f"got {exc or 'a valid result'}")
            continue
        if exc is not None:
            assert str(exc).startswith(f"{code}: ") and len(exc.message) > 10, case.name
        else:
            frames, info = result
            assert frames.shape == (config.num_frames, config.frame_size, config.frame_size, 3), case.name
            assert frames.dtype == np.uint8 and info.num_frames >= 1, case.name
            assert 0 < info.width <= CORPUS_LIMITS.max_width and 0 < info.height <= CORPUS_LIMITS.max_height
    assert not mismatches, "\n".join(mismatches)


def test_limit_errors_name_the_limit_and_its_value(bad_input_corpus):
    by_name = {c.name: c for c in bad_input_corpus}
    limits = CORPUS_LIMITS
    expected_text = {
        "over_bytes": str(limits.max_bytes),
        "over_resolution": f"{limits.max_width}x{limits.max_height}",
        "odd_4097x3": "4097x3",
        "resolution_grows_midstream": "800x600",
        "over_duration": f"{limits.max_duration_s:.0f} s",
        "over_frames": str(limits.max_frames),
        "odd_1x1": str(limits.min_side),
        "ffv1_codec": "ffv1",
        "audio_mp3": "mp3",
        "png": "png",
    }
    for name, text in expected_text.items():
        with pytest.raises(VideoError) as err:
            load_frames(by_name[name].path, corpus_config())
        assert err.value.code == by_name[name].expect and text in err.value.message, (name, str(err.value))


def test_probe_is_fast_and_never_calls_the_decoder(bad_input_corpus, monkeypatch):
    """The probe decides every case from headers and packets (FFmpeg's own stream probing aside,
    which max_pixels bounds): it never runs the decoder over the stream."""
    import av

    def no_decode(*args, **kwargs):
        raise AssertionError("probe decoded a frame")

    monkeypatch.setattr(av.container.InputContainer, "decode", no_decode)
    monkeypatch.setattr(av.video.stream.VideoStream, "decode", no_decode)
    start = time.monotonic()
    for case in bad_input_corpus:
        try:
            probe(case.path, CORPUS_LIMITS)
        except VideoError:
            pass
    assert time.monotonic() - start < 20.0


def test_limits_are_checked_in_order_before_reading_the_stream(bad_input_corpus):
    """max_bytes is judged on the size alone: the bytes are not even opened as a container."""
    over = next(c for c in bad_input_corpus if c.name == "over_bytes")
    with pytest.raises(VideoError) as err:
        probe(b"\x00" * (CORPUS_LIMITS.max_bytes + 1), CORPUS_LIMITS)
    assert err.value.code == "max_bytes"
    # The same padded file is fine under a larger byte limit (trailing junk after a valid mp4).
    info = probe(over.path, dataclasses.replace(CORPUS_LIMITS, max_bytes=10 * CORPUS_LIMITS.max_bytes))
    assert info.num_frames == 40


def test_a_playlist_is_never_followed_even_if_its_container_were_allowed(bad_input_corpus):
    """FFmpeg's hls demuxer would open the file a playlist names (a local-file read / SSRF).

    With the hls demuxer allowed by the limits, the probe must still fail to read it: no protocol
    is allowed for anything a demuxer opens by itself.
    """
    playlist = next(c for c in bad_input_corpus if c.name == "hls_playlist_local_ref")
    lax = dataclasses.replace(CORPUS_LIMITS, allowed_containers=CORPUS_LIMITS.allowed_containers + ("hls", "applehttp"))
    for source in (playlist.path, playlist.data):
        with pytest.raises(VideoError) as err:
            probe(source, lax)
        assert err.value.code == "not_a_video"


def test_rotation_metadata_is_ignored_the_same_everywhere(bad_input_corpus):
    """The stored pixels are classified: a rotated file gives the frames of its unrotated twin.

    Training, the probe/decode steps and the reference pipeline all use load_frames, so this is
    consistent end to end (a decision written in docs/limits.md).
    """
    import av

    by_name = {c.name: c for c in bad_input_corpus}
    with av.open(str(by_name["rotated_90"].path)) as container:  # the rotation is really there
        first = next(container.decode(video=0))
        assert av.sidedata.sidedata.Type.DISPLAYMATRIX in [sd.type for sd in first.side_data]
    rotated, _ = load_frames(by_name["rotated_90"].path, corpus_config())
    plain, _ = load_frames(by_name["h264_good"].path, corpus_config())
    np.testing.assert_array_equal(rotated, plain)


def test_corrupt_middle_is_concealed_not_dropped(bad_input_corpus):
    by_name = {c.name: c for c in bad_input_corpus}
    damaged, info = load_frames(by_name["h264_corrupt_middle"].path, corpus_config())
    plain, _ = load_frames(by_name["h264_faststart_cut90"].path.with_name("src_h264_faststart.mp4"), corpus_config())
    assert info.num_frames == 40
    assert not np.array_equal(damaged, plain)  # the damage is visible ...
    np.testing.assert_array_equal(damaged[0], plain[0])  # ... but only after it


def test_decoder_refuses_a_picture_over_the_limit_whatever_the_header_said(bad_input_corpus):
    grows = next(c for c in bad_input_corpus if c.name == "resolution_grows_midstream")
    info = probe(grows.path, CORPUS_LIMITS)
    assert (info.width, info.height) == (160, 120)  # the header's answer
    idx = sample_indices(info.num_frames, 16)
    with pytest.raises(VideoError) as err:
        decode_frames(grows.path, idx, 64, info.num_frames, limits=CORPUS_LIMITS)
    assert err.value.code == "max_resolution"
    # Only the indices before the size change: fine, the big pictures are never reached.
    frames = decode_frames(grows.path, np.arange(10), 64, info.num_frames, limits=CORPUS_LIMITS)
    assert frames.shape == (10, 64, 64, 3)
    # Under the default limits (4096x4096) the whole file is a valid video.
    frames = decode_frames(grows.path, idx, 64, info.num_frames)
    assert frames.shape == (16, 64, 64, 3)


def test_decoder_thread_count_is_bounded(bad_input_corpus, monkeypatch):
    import av
    from vidcls import video

    seen = []
    real_decode = av.video.stream.VideoStream.decode

    def spy(self, packet=None):
        seen.append(self.codec_context.thread_count)
        return real_decode(self, packet)

    monkeypatch.setattr(av.video.stream.VideoStream, "decode", spy)
    good = next(c for c in bad_input_corpus if c.name == "h264_good")
    load_frames(good.path, corpus_config())
    assert seen and set(seen) == {video.DECODER_THREADS}


@pytest.mark.parametrize("indices", [[], [-1, 0, 1], [0, -5]])
def test_decode_refuses_indices_that_match_no_frame(bad_input_corpus, indices):
    """Rows for impossible indices would be uninitialised memory: refuse them instead."""
    good = next(c for c in bad_input_corpus if c.name == "h264_good")
    with pytest.raises(VideoError) as err:
        decode_frames(good.path, np.array(indices, dtype=np.int64), 32, limits=CORPUS_LIMITS)
    assert err.value.code == "bad_indices"


def test_indices_past_the_end_are_an_error_not_a_guess(bad_input_corpus):
    good = next(c for c in bad_input_corpus if c.name == "h264_good")  # 40 frames
    with pytest.raises(VideoError) as err:
        decode_frames(good.path, np.array([0, 10, 400]), 32, limits=CORPUS_LIMITS)
    assert err.value.code == "corrupt"


# ---- server level: the same corpus through the real Triton ensemble ------------------------------
# The session's shared server uses the default limits; the corpus needs its small ones, so this
# module builds its own repository (same tiny checkpoints, CORPUS_LIMITS) and runs its own server.
ATOL = 1e-5  # served probabilities vs the PyTorch reference on the same frames


@pytest.fixture(scope="module")
def limits_server(tiny_checkpoints, serving_config, tmp_path_factory):
    from vidcls.export.repository import build_repository
    from vidcls.launcher import TritonServer

    root = tmp_path_factory.mktemp("limits_server")
    repo = build_repository(tiny_checkpoints, root / "repo", target="cpu",
                            config=serving_config.replace(limits=CORPUS_LIMITS))
    server = TritonServer(repo, log_path=root / "tritonserver.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _request(config, data: bytes):
    import tritonclient.grpc as grpcclient

    s = config.serving
    array = np.frombuffer(data, dtype=np.uint8)[None]
    inp = grpcclient.InferInput(s.video, list(array.shape), "UINT8")
    inp.set_data_from_numpy(array)
    outputs = [grpcclient.InferRequestedOutput(s.probabilities), grpcclient.InferRequestedOutput(s.class_name)]
    return [inp], outputs


def send_all_at_once(url: str, config, payloads: list[bytes], timeout: float = 240.0) -> list:
    """Every payload in flight at once over one gRPC channel; one result or exception each."""
    import queue

    import tritonclient.grpc as grpcclient

    done: queue.Queue = queue.Queue()
    with grpcclient.InferenceServerClient(url) as client:
        for i, data in enumerate(payloads):
            inputs, outputs = _request(config, data)
            client.async_infer(config.serving.ensemble, inputs, outputs=outputs, client_timeout=timeout,
                               callback=lambda result, error, i=i: done.put((i, result, error)))
        results = {}
        deadline = time.monotonic() + timeout + 30
        for _ in payloads:
            i, result, error = done.get(timeout=max(1.0, deadline - time.monotonic()))
            results[i] = error if error is not None else result
    return [results[i] for i in range(len(payloads))]


def _expected_probs(reference_pipeline, source) -> np.ndarray:
    frames, _ = load_frames(source, corpus_config())
    return reference_pipeline.classify_frames(frames)


def _check_good(result, expected, config, label):
    assert not isinstance(result, Exception), f"{label}: {result}"
    probs = result.as_numpy(config.serving.probabilities)
    assert probs.shape == (1, config.num_classes), label
    np.testing.assert_allclose(probs[0], expected, atol=ATOL, rtol=0, err_msg=label)


@pytest.mark.server
@pytest.mark.timeout(600)
def test_server_answers_every_corpus_case_mixed_with_good_files(
        limits_server, serving_config, reference_pipeline, bad_input_corpus, video_factory):
    import tritonclient.grpc as grpcclient

    goods = [video_factory(f"mix_{i}.mp4", n=20 + 7 * i, size=(96 + 16 * i, 64 + 8 * i), seed=50 + i)
             for i in range(4)] + [video_factory("mix_vp9.webm", n=24, size=(96, 96), codec="libvpx-vp9", seed=60)]
    # Good files between every few bad ones, so every batch the server forms mixes both.
    payloads, labels = [], []
    for k, case in enumerate(bad_input_corpus):
        payloads.append(case.data)
        labels.append(("case", case))
        if k % 5 == 2:
            good = goods[(k // 5) % len(goods)]
            payloads.append(good.read_bytes())
            labels.append(("good", good))
    results = send_all_at_once(limits_server.grpc_url, serving_config, payloads)

    problems = []
    for (kind, item), result in zip(labels, results):
        if kind == "good":
            _check_good(result, reference_pipeline.classify(item), serving_config, item.name)
            continue
        case = item
        if case.expect is None:
            if isinstance(result, Exception):
                problems.append(f"{case.name}: expected a result, got {result.message()}")
            else:
                _check_good(result, _expected_probs(reference_pipeline, case.path), serving_config, case.name)
        elif not isinstance(result, Exception):
            problems.append(f"{case.name}: expected error {case.expect}, got a result")
        else:
            message = result.message()
            # Triton refuses a zero-length tensor itself, before our probe; any other case must be
            # our probe's or decoder's per-request error, naming the failed check.
            if case.expect == "empty" and "empty" not in message:
                if not ("VIDEO" in message or "shape" in message or "size" in message):
                    problems.append(f"{case.name}: unclear error {message!r}")
            elif f"{case.expect}:" not in message:
                problems.append(f"{case.name}: expected '{case.expect}:' in {message!r}")
    assert not problems, "\n".join(problems)

    assert limits_server.running()
    with grpcclient.InferenceServerClient(limits_server.grpc_url) as client:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(serving_config.serving.ensemble)
    # ... and a good request after all of them still succeeds.
    after = send_all_at_once(limits_server.grpc_url, serving_config, [goods[0].read_bytes()])[0]
    _check_good(after, reference_pipeline.classify(goods[0]), serving_config, "after")


@pytest.mark.server
@pytest.mark.timeout(600)
def test_a_step_that_fails_after_the_probe_does_not_fail_the_others(
        limits_server, serving_config, reference_pipeline, bad_input_corpus, video_factory):
    """Files that pass the probe and then fail in video_decode (a picture that grows over the
    limit mid-stream; a stream whose only frame cannot be decoded), several copies among good
    requests, all in flight at once: the decode step fails exactly those requests, the ensemble
    answers the others, and the server keeps serving."""
    import tritonclient.grpc as grpcclient

    by_name = {c.name: c for c in bad_input_corpus}
    failing = [by_name["resolution_grows_midstream"], by_name["h264_faststart_cut10"]]
    for case in failing:  # the premise: the probe accepts them
        probe(case.path, CORPUS_LIMITS)
    good = video_factory("fault_good.mp4", n=30, size=(128, 96), seed=70)
    expected = reference_pipeline.classify(good)
    payloads = []
    for _ in range(4):
        payloads += [good.read_bytes(), failing[0].data, good.read_bytes(), failing[1].data]
    results = send_all_at_once(limits_server.grpc_url, serving_config, payloads)
    for i, result in enumerate(results):
        if i % 2 == 0:
            _check_good(result, expected, serving_config, f"good #{i}")
        else:
            case = failing[(i // 2) % 2]
            assert isinstance(result, Exception), case.name
            assert f"{case.expect}:" in result.message(), result.message()
            assert serving_config.serving.decode in result.message() or "decode" in result.message().lower() \
                or case.expect in result.message()
    # A client may call an internal model directly: video_decode with indices no frame has.
    s = serving_config.serving
    with grpcclient.InferenceServerClient(limits_server.grpc_url) as client:
        video = np.frombuffer(good.read_bytes(), np.uint8)[None]
        v = grpcclient.InferInput(s.video, list(video.shape), "UINT8")
        v.set_data_from_numpy(video)
        idx = np.full((1, serving_config.num_frames), -3, np.int32)
        ix = grpcclient.InferInput(s.frame_indices, list(idx.shape), "INT32")
        ix.set_data_from_numpy(idx)
        from tritonclient.utils import InferenceServerException

        with pytest.raises(InferenceServerException) as err:
            client.infer(s.decode, [v, ix])
        assert "bad_indices:" in err.value.message()
        assert client.is_server_ready()
    after = send_all_at_once(limits_server.grpc_url, serving_config, [good.read_bytes()])[0]
    _check_good(after, expected, serving_config, "after")


@pytest.mark.timeout(300)
def test_mutated_files_give_an_error_code_or_a_valid_result(bad_input_corpus):
    """Bounded, seeded mutation fuzzing of the valid files: byte flips, overwritten runs, cuts,
    inserted and duplicated ranges. Anything but a VideoError or a valid result is a crash."""
    import random

    config = corpus_config()
    by_name = {c.name: c for c in bad_input_corpus}
    seeds = [by_name[n].data for n in ("h264_good", "vp9_good", "h264_frames_claimed", "odd_99x77_mjpeg",
                                       "variable_frame_rate", "odd_99x77_h264_444")]
    rng = random.Random(20261125)
    crashes, slow = [], []
    for i in range(160):
        d = bytearray(rng.choice(seeds))
        op = rng.choice(["flip", "overwrite", "cut", "insert", "duplicate"])
        at = rng.randrange(len(d))
        if op == "flip":
            for _ in range(rng.randint(1, 8)):
                d[rng.randrange(len(d))] = rng.randrange(256)
        elif op == "overwrite":
            n = rng.randint(10, 3000)
            d[at:at + n] = bytes(rng.randrange(256) for _ in range(len(d[at:at + n])))
        elif op == "cut":
            del d[at:]
        elif op == "insert":
            d[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 500)))
        else:
            end = min(len(d), at + rng.randint(100, 5000))
            d[end:end] = d[at:end]
        start = time.monotonic()
        try:
            frames, _ = load_frames(bytes(d), config)
            assert frames.shape == (config.num_frames, config.frame_size, config.frame_size, 3)
        except VideoError:
            pass
        except Exception as exc:  # the point of the test
            crashes.append(f"#{i} {op}: {exc!r}")
        if time.monotonic() - start > CASE_SECONDS:
            slow.append(f"#{i} {op}")
    assert not crashes and not slow, (crashes, slow)


def test_decoder_refuses_an_oversized_picture_before_allocating_it(bad_input_corpus, monkeypatch):
    """Bypassing the probe, an 800x600 file under a 640x480 limit: FFmpeg's max_pixels makes the
    decoder refuse the stream, so not a single 800x600 picture is ever produced."""
    import av

    produced = []
    real_decode = av.video.stream.VideoStream.decode

    def spy(self, packet=None):
        frames = real_decode(self, packet)
        produced.extend((f.width, f.height) for f in frames)
        return frames

    monkeypatch.setattr(av.video.stream.VideoStream, "decode", spy)
    big = next(c for c in bad_input_corpus if c.name == "over_resolution")
    with pytest.raises(VideoError) as err:
        decode_frames(big.path, np.arange(3), 32, limits=CORPUS_LIMITS)
    assert err.value.code == "max_resolution" and "800x600" in err.value.message
    assert produced == []


def test_a_picture_the_scaler_cannot_read_is_a_pixel_format_error(bad_input_corpus, monkeypatch):
    import av

    def unreadable(self, *args, **kwargs):
        raise ValueError("Conversion from this pixel format is not supported")

    monkeypatch.setattr(av.video.frame.VideoFrame, "to_ndarray", unreadable)
    good = next(c for c in bad_input_corpus if c.name == "h264_good")
    with pytest.raises(VideoError) as err:
        load_frames(good.path, corpus_config())
    assert err.value.code == "pixel_format" and "yuv420p" in err.value.message
