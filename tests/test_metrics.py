"""The custom metrics of the python steps, scraped from the real server's metrics port.

A known set of good and bad requests goes to the ensemble at once; the change of every vidcls_*
series between two scrapes must be exactly what those requests imply: the classes the server
answered, each refusal under its step and code, the packets and frames and the decode mode that
vidcls.video.decode_frames reports for the same files, and the probe's durations and resolutions
in their buckets.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from tests.fixtures.bad_inputs import truncate, write_video
from tests.fixtures.metrics import delta, key, scrape
from tests.fixtures.videos import moving_frames
from vidcls.triton_models import metrics as m


@pytest.fixture(scope="module")
def metric_inputs(tmp_path_factory, video_factory):
    root = tmp_path_factory.mktemp("metric_inputs")
    good = [
        # seed 15: tests/fixtures/client.py's c_good_a is seed 11 with the same size and length, byte for
        # byte the same file, which the session server's answer cache would answer without the pipeline.
        video_factory("m_h264.mp4", n=40, size=(160, 120), seed=15),
        video_factory("m_vp9.webm", n=30, size=(176, 144), codec="libvpx-vp9", seed=12),
        video_factory("m_portrait.mp4", n=25, size=(96, 160), seed=13),
        # 300 frames with a key frame every 25: far enough apart for the seeking decode.
        video_factory("m_long.mp4", n=300, size=(64, 48), seed=14, options={"g": "25", "keyint_min": "25"}),
    ]
    faststart = write_video(root / "fast.mp4", moving_frames(40, 160, 120), container_options={"movflags": "+faststart"})
    bad = {
        "garbage": (np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "video_probe", "not_a_video"),
        "text": (b"not a video at all\n" * 50, "video_probe", "not_a_video"),
        # The index survives the cut, so the probe accepts it; no picture decodes.
        "cut": (truncate(faststart, root / "cut10.mp4", 0.1).read_bytes(), "video_decode", "corrupt"),
    }
    return good, bad


def _expected(config, good, accepted_bad):
    """What the python steps should record, from the same library functions on the same files."""
    from vidcls.sampling import sample_indices
    from vidcls.video import decode_frames, probe

    packets, modes, durations, sides = 0, Counter(), [], []
    for path in good + accepted_bad:
        info = probe(path, config.limits)
        durations.append(info.duration_s)
        sides.append(min(info.width, info.height))
    for path in good:
        info = probe(path, config.limits)
        stats: dict = {}
        decode_frames(path, sample_indices(info.num_frames, config.num_frames), config.frame_size,
                      num_frames=info.num_frames, limits=config.limits, stats=stats)
        packets += stats["packets"]
        modes[stats["mode"]] += 1
    return packets, modes, durations, sides


def _histogram(changes, spec, values):
    count = changes.get(key(f"{spec.name}_count"), 0)
    total = changes.get(key(f"{spec.name}_sum"), 0)
    buckets = {float(dict(labels)["le"]): v for (name, labels), v in changes.items() if name == f"{spec.name}_bucket"}
    assert count == len(values)
    assert total == pytest.approx(sum(values), rel=1e-6)
    for le in spec.buckets:
        assert buckets.get(le, 0) == sum(v <= le for v in values), (spec.name, le, buckets)
    assert buckets[float("inf")] == len(values)


@pytest.mark.server
def test_scraped_metrics_count_exactly_what_was_sent(triton_server, serving_config, metric_inputs, tmp_path):
    from tests.test_serving import _send_concurrently
    from tritonclient.utils import InferenceServerException

    good, bad = metric_inputs
    payloads = [p.read_bytes() for p in good] + [data for data, _, _ in bad.values()]
    before = scrape(triton_server.metrics_url)
    results = _send_concurrently(triton_server.grpc_url, serving_config, payloads)
    after = scrape(triton_server.metrics_url)
    changes = delta(before, after)

    s = serving_config.serving
    answered = Counter()
    for path, result in zip(good, results):
        assert not isinstance(result, Exception), f"{path.name}: {result}"
        answered[result.as_numpy(s.class_name).reshape(-1)[0].decode()] += 1
    refused = Counter()
    for (name, (_, step, code)), result in zip(bad.items(), results[len(good):]):
        assert isinstance(result, InferenceServerException), name
        assert f"{code}:" in result.message(), (name, result.message())
        refused[(step, code)] += 1

    # Every class the server answered, once per video; no other class moved.
    predictions = {dict(labels)["class"]: v for (name, labels), v in changes.items() if name == m.PREDICTIONS.name}
    assert predictions == dict(answered)
    # Refusals under the step that refused and the code it gave; nothing counted twice.
    failures = {(dict(labels)["step"], dict(labels)["code"]): v
                for (name, labels), v in changes.items() if name == m.FAILURES.name}
    assert failures == dict(refused)

    cut = tmp_path / "cut.mp4"
    cut.write_bytes(bad["cut"][0])
    packets, modes, durations, sides = _expected(serving_config, good, [cut])
    assert set(modes) == {"seek", "sequential"}, f"the inputs should exercise both decode modes: {modes}"
    assert changes[key(m.DECODED_PACKETS.name)] == packets
    assert changes[key(m.SAMPLED_FRAMES.name)] == len(good) * serving_config.num_frames
    decodes = {dict(labels)["mode"]: v for (name, labels), v in changes.items() if name == m.DECODES.name}
    assert decodes == dict(modes)
    _histogram(changes, m.INPUT_DURATION, durations)
    _histogram(changes, m.INPUT_SHORT_SIDE, sides)
    # Every request passed the front model's answer cache once; none of these files was seen before.
    outcomes = {dict(labels)["outcome"]: v for (name, labels), v in changes.items() if name == m.ANSWER_CACHE.name}
    assert outcomes == {"miss": len(payloads)}
    # Only the series above moved among ours.
    ours = {name for name, _ in changes if name.startswith("vidcls_")}
    assert ours <= {series for spec in m.ALL for series in spec.series()}

    # The good files again: answered from the cache (hits), so the pipeline's series stay still;
    # with the cache turned off they are classified (and counted) again.
    again = delta(after, _scrape_after(triton_server, serving_config, [p.read_bytes() for p in good]))
    assert {k: v for k, v in again.items() if k[0].startswith("vidcls_")} == {
        key(m.ANSWER_CACHE.name, outcome="hit"): len(good)}
    latest = scrape(triton_server.metrics_url)
    off = delta(latest, _scrape_after(triton_server, serving_config, [good[0].read_bytes()], answer_cache=False))
    assert off[key(m.ANSWER_CACHE.name, outcome="off")] == 1
    assert sum(v for (name, _), v in off.items() if name == m.PREDICTIONS.name) == 1


def _scrape_after(server, config, payloads, answer_cache=True):
    from tests.test_serving import _send_concurrently

    results = _send_concurrently(server.grpc_url, config, payloads, answer_cache=answer_cache)
    assert not any(isinstance(r, Exception) for r in results), results
    return scrape(server.metrics_url)


@pytest.mark.server
def test_metric_families_are_declared_once_with_their_help(triton_server, serving_config, h264_video, grpc_infer):
    """Every family in the scrape is one of metrics.ALL, with its type and description."""
    from prometheus_client.parser import text_string_to_metric_families
    import urllib.request

    grpc_infer(h264_video)
    text = urllib.request.urlopen(triton_server.metrics_url, timeout=10).read().decode()
    # prometheus_client names a counter's family without its _total suffix.
    families = {f.name: f for f in text_string_to_metric_families(text) if f.name.startswith("vidcls_")}
    specs = {spec.name.removesuffix("_total"): spec for spec in m.ALL}
    assert set(families) <= set(specs), set(families) - set(specs)
    for name, family in families.items():
        assert family.type == specs[name].kind and family.documentation == specs[name].description
    # A good request reaches every series but the failures.
    assert set(specs) - {m.FAILURES.name.removesuffix("_total")} <= set(families)


def test_recorder_without_a_metrics_api_does_nothing():
    """Outside Triton (tests, a server without the API) the steps run the same and record nothing."""
    recorder = m.Recorder(None)
    assert not recorder.enabled
    recorder.record([m.sample(m.PREDICTIONS, **{"class": "Gaming"})])
    with pytest.raises(ValueError, match="takes labels"):
        m.sample(m.FAILURES, step="video_probe")
