"""Identical frames: the decode step hands on each distinct picture once plus the map back to T rows,
the backbone runs on the distinct pictures only, and the features are those of all T frames, bit
for bit (python models, the gpu backbone graph, and the real server against the reference)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_serving import ATOL, _load, _send_concurrently, fake_pb  # noqa: F401 - fixture
from vidcls.dedup import distinct_frames, expand, identity_map, stack_distinct


def slideshow(slides: int, hold: int, size=(160, 120), seed: int = 0) -> list[np.ndarray]:
    """``slides`` random pictures, each held for ``hold`` frames: a static screen recording."""
    rng = np.random.default_rng(seed)
    pictures = [(rng.random((size[1], size[0], 3)) * 255).astype(np.uint8) for _ in range(slides)]
    return [pictures[i // hold] for i in range(slides * hold)]


@pytest.fixture(scope="session")
def static_video(tmp_path_factory):
    from vidcls.video import encode_video

    return encode_video(tmp_path_factory.mktemp("static") / "slides.mp4", slideshow(3, 20), codec="libx264")


def test_distinct_frames_keep_first_appearance_and_map_back():
    rng = np.random.default_rng(1)
    a, b, c = (rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(3))
    frames = np.stack([a, b, a, c, b, b])
    distinct, mapping = distinct_frames(frames)
    assert len(distinct) == 3 and mapping.dtype == np.int32
    np.testing.assert_array_equal(distinct, np.stack([a, b, c]))
    np.testing.assert_array_equal(mapping, [0, 1, 0, 2, 1, 1])
    np.testing.assert_array_equal(distinct[mapping], frames)
    unique = np.stack([a, b, c])
    same, ident = distinct_frames(unique)
    assert same is unique  # nothing repeated: no copy
    np.testing.assert_array_equal(ident, identity_map(3))


def test_pictures_with_equal_digests_are_compared_byte_for_byte(monkeypatch):
    """A digest collision must not merge two different pictures: the bytes decide."""
    import vidcls.dedup as dedup

    class Constant:
        def __init__(self, *args, **kwargs):
            pass

        def digest(self):
            return b"\0" * 16

    monkeypatch.setattr(dedup.hashlib, "blake2b", Constant)
    rng = np.random.default_rng(2)
    a, b = (rng.integers(0, 256, (4, 4, 3), dtype=np.uint8) for _ in range(2))
    b[0, 0, 0] = a[0, 0, 0] ^ 1  # differ in at least one byte
    distinct, mapping = distinct_frames(np.stack([a, b, a, b]))
    assert len(distinct) == 2
    np.testing.assert_array_equal(mapping, [0, 1, 0, 1])


def test_stack_pads_and_expand_gathers_back():
    rng = np.random.default_rng(3)
    v1 = rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    v1[3] = v1[1]
    v2 = rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    kept = [distinct_frames(v1), distinct_frames(v2)]
    rows, maps = stack_distinct(kept)
    assert rows.shape == (2, 5, 4, 4, 3) and maps.shape == (2, 5)
    assert (maps[0] < 4).all()  # the padding row (a copy of the first picture) is never mapped
    np.testing.assert_array_equal(expand(rows, maps), np.stack([v1, v2]))
    with pytest.raises(ValueError, match="map entries"):
        expand(rows, np.full((2, 5), 7))


def test_static_video_decodes_to_fewer_pictures_with_the_same_pixels(fake_pb, cpu_repository, serving_config,  # noqa: F811
                                                                       static_video):
    from vidcls.sampling import sample_indices
    from vidcls.triton_models.decode import DecodeModel
    from vidcls.video import decode_frames, probe

    s, T = serving_config.serving, serving_config.num_frames
    decode = _load(DecodeModel, "decode", cpu_repository, s.decode)
    indices = sample_indices(probe(static_video).num_frames, T).astype(np.int32)
    item = {s.video: np.frombuffer(static_video.read_bytes(), np.uint8)[None], s.frame_indices: indices[None]}
    out = decode.process([item])[0]
    frames, mapping = out[s.frames], out[s.frame_map]
    assert mapping.shape == (1, T)
    assert 3 <= frames.shape[1] < T // 2, frames.shape  # 3 slides (an encoder may refine one once)
    full = decode_frames(static_video, indices, serving_config.frame_size)
    np.testing.assert_array_equal(expand(frames, mapping)[0], full)


def test_features_are_the_same_bit_for_bit_with_and_without_dedup(fake_pb, cpu_repository, serving_config,  # noqa: F811
                                                                    static_video, h264_video):
    """Backbone on the distinct pictures of a static video, batched with a moving one (ragged K),
    then temporal_views' gather: exactly the views computed from all T frames of each video."""
    from vidcls.sampling import sample_indices
    from vidcls.triton_models.onnx_models import BackboneModel
    from vidcls.triton_models.views import ViewsModel
    from vidcls.video import decode_frames, probe

    s, T, S = serving_config.serving, serving_config.num_frames, serving_config.frame_size
    backbone = _load(BackboneModel, "backbone", cpu_repository, s.backbone)
    views = _load(ViewsModel, "views", cpu_repository, s.views)
    assert views.inputs == (s.features, s.frame_map)
    full = [decode_frames(v, sample_indices(probe(v).num_frames, T), S) for v in (static_video, h264_video)]
    kept = [distinct_frames(f) for f in full]
    assert len(kept[0][0]) < T and len(kept[1][0]) == T

    deduped = backbone.process([{s.frames: d[None]} for d, _ in kept])  # one execution, K = 4 and 16
    plain = backbone.process([{s.frames: f[None]} for f in full])
    for (_, mapping), got, want in zip(kept, deduped, plain):
        assert got[s.features].shape[1] == mapping.max() + 1
        assert np.array_equal(expand(got[s.features], mapping[None]), want[s.features])

    with_map = views.process([{s.features: r[s.features], s.frame_map: m[None]} for r, (_, m) in zip(deduped, kept)])
    identity = views.process([{s.features: r[s.features], s.frame_map: identity_map(T)[None]} for r in plain])
    for got, want in zip(with_map, identity):
        assert got.keys() == want.keys()
        for name in got:
            assert np.array_equal(got[name], want[name]), name


def test_a_bad_frame_map_is_that_requests_error(fake_pb, cpu_repository, serving_config):  # noqa: F811
    from vidcls.triton_models.views import ViewsModel

    s, T, D = serving_config.serving, serving_config.num_frames, serving_config.feature_dim
    views = _load(ViewsModel, "views", cpu_repository, s.views)
    good = {s.features: np.ones((1, 2, D), np.float32), s.frame_map: np.zeros((1, T), np.int32)}
    bad = {s.features: np.ones((1, 2, D), np.float32), s.frame_map: np.full((1, T), 5, np.int32)}
    responses = views.execute([good, bad])
    assert responses[0].error is None
    assert responses[1].error.code == "INVALID_ARG" and responses[1].error.message.startswith("bad_frame_map")


def test_gpu_backbone_graph_takes_fewer_frames_per_video(tmp_path, serving_config):
    """Triton's onnxruntime/tensorrt backbone ([B, K, S, S, 3]) runs K < T frames as well: the same
    features as the frames graph, picture by picture."""
    from vidcls.export.onnx_export import export_backbone_onnx
    from vidcls.export.repository import add_video_axis
    from vidcls.models.backbone import build_backbone
    from vidcls.ort import make_session

    s, S = serving_config.serving, serving_config.frame_size
    frames_graph = export_backbone_onnx(build_backbone(serving_config, "none"), serving_config, tmp_path / "f.onnx")
    video_graph = add_video_axis(frames_graph, tmp_path / "v.onnx", serving_config)
    flat, video = make_session(frames_graph, intra_op_threads=1), make_session(video_graph, intra_op_threads=1)
    rng = np.random.default_rng(4)
    for k in (1, 5, serving_config.num_frames):
        x = rng.integers(0, 256, (2, k, S, S, 3), dtype=np.uint8)
        got = video.run(None, {s.frames: x})[0]
        assert got.shape == (2, k, serving_config.feature_dim)
        want = flat.run(None, {s.frames: x.reshape(-1, S, S, 3)})[0].reshape(2, k, -1)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.server
def test_served_static_video_equals_reference(triton_server, serving_config, reference_pipeline, static_video,
                                              h264_video):
    """Through the real server, batched with a video without repeats: equal to the reference."""
    s = serving_config.serving
    results = _send_concurrently(triton_server.grpc_url, serving_config, [static_video, h264_video, static_video])
    for path, result in zip([static_video, h264_video, static_video], results):
        assert not isinstance(result, Exception), result
        np.testing.assert_allclose(result.as_numpy(s.probabilities)[0], reference_pipeline.classify(path),
                                   atol=ATOL, rtol=0, err_msg=path.name)
