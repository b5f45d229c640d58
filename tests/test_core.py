"""Config object, index sampling, multi-scale and TTA math, the PyAV reference decoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vidcls.config import VidclsConfig
from vidcls.sampling import multiscale, sample_indices, scale_indices, tta_views, view_indices
from vidcls.video import VideoError, decode_frames, load_frames, probe


# ---- config -------------------------------------------------------------------------------
def test_config_defaults_are_the_design_numbers():
    c = VidclsConfig()
    assert c.classes == ("Animation", "Flat_Content", "Gaming", "Natural_Content")
    assert c.display_names[1] == "Flat Content" and c.display_names[3] == "Natural Content"
    assert (c.num_frames, c.frame_size, c.backbone, c.feature_dim, c.backbone_batch) == (64, 256, "efficientnet_v2_s", 1280, 24)
    assert c.seq_len == 73
    assert c.view_lengths == {"original": 73, "reverse": 73, "speed_up": 36, "speed_down": 109}
    assert c.model_seeds == (42, 43, 44, 45)
    t = c.temporal
    assert (t.hidden_dim, t.num_lstm_layers, t.num_attention_heads, t.dropout, t.bidirectional) == (768, 4, 12, 0.4, True)


def test_config_json_round_trip_and_validation():
    for c in (VidclsConfig(), VidclsConfig.tiny(), VidclsConfig.for_backbone("resnet50")):
        assert VidclsConfig.from_json(c.to_json()) == c
    assert VidclsConfig.for_backbone("resnet101").temporal.feature_dim == 2048
    with pytest.raises(ValueError, match="feature_dim"):
        VidclsConfig(backbone="resnet50")
    bad = json.loads(VidclsConfig().to_json())
    bad["temporal"]["hiden_dim"] = 3
    with pytest.raises(ValueError, match="hiden_dim"):
        VidclsConfig.from_dict(bad)


def test_config_is_frozen():
    with pytest.raises(Exception):
        VidclsConfig().num_frames = 3  # type: ignore[misc]


# ---- frame sampling -----------------------------------------------------------------------
def test_sample_indices_edge_cases():
    assert sample_indices(1).tolist() == [0] * 64
    idx63 = sample_indices(63)
    assert idx63[0] == 0 and idx63[-1] == 62 and len(idx63) == 64
    assert np.all(np.diff(idx63) >= 0) and len(set(idx63.tolist())) == 63  # one frame repeated
    assert sample_indices(64).tolist() == list(range(64))
    idx = sample_indices(10000)
    assert idx[0] == 0 and idx[-1] == 9999 and np.all(np.diff(idx) > 0)
    # floor(linspace): hand-computed values
    assert idx[1] == int(9999 / 63) == 158
    assert sample_indices(5, 4).tolist() == [0, 1, 2, 4]
    with pytest.raises(ValueError):
        sample_indices(0)


# ---- multi-scale and TTA ------------------------------------------------------------------
def test_scale_indices_hand_computed():
    assert scale_indices(64, 1.0).tolist() == list(range(64))
    s085 = scale_indices(64, 0.85)
    assert len(s085) == 54 and s085[0] == 0 and s085[-1] == 63 and s085[1] == 1 and s085[2] == 2
    s115 = scale_indices(64, 1.15)
    assert len(s115) == 73 and s115[:3].tolist() == [0, 0, 1]
    assert len(scale_indices(4, 0.85)) == 5  # max(int(64*s), 5) floor


def test_multiscale_hand_computed():
    t, d = 64, 3
    f = np.arange(t * d, dtype=np.float32).reshape(t, d)
    out = multiscale(f, (1.0, 0.85, 1.15))
    assert out.shape == (73, 3)
    i085, i115 = scale_indices(64, 0.85), scale_indices(64, 1.15)
    expected_row0 = (f[0] + f[i085[0]] + f[i115[0]]) / 3
    np.testing.assert_array_equal(out[0], expected_row0)
    # row 60: scale 1.0 and 1.15 present, 0.85 is padding (only 54 rows)
    np.testing.assert_allclose(out[60], (f[60] + f[i115[60]]) / 3, rtol=1e-6)
    # row 70: only the 1.15 scale (73 rows) is present
    np.testing.assert_allclose(out[70], f[i115[70]] / 3, rtol=1e-6)


def test_tta_views_hand_computed():
    seq = np.arange(73 * 2, dtype=np.float32).reshape(73, 2)
    views = tta_views(seq, ("original", "reverse", "speed_up", "speed_down"))
    assert {k: v.shape[0] for k, v in views.items()} == {"original": 73, "reverse": 73, "speed_up": 36, "speed_down": 109}
    np.testing.assert_array_equal(views["reverse"][0], seq[72])
    assert view_indices(73, "speed_up")[:3].tolist() == [0, 2, 4]  # linspace(0,72,36): step 72/35
    sd = view_indices(73, "speed_down")
    assert sd.max() == 72 and sd[:4].tolist() == [0, 0, 1, 2]
    assert view_indices(10, "speed_up").tolist() == list(range(10))  # L <= 10 unchanged
    assert view_indices(5, "speed_down").tolist() == list(range(5))  # L <= 5 unchanged


@pytest.mark.parametrize("batch", [False, True])
def test_numpy_and_torch_agree_bit_for_bit(batch):
    rng = np.random.default_rng(0)
    f = rng.standard_normal((3, 64, 16) if batch else (64, 16)).astype(np.float32)
    c = VidclsConfig()
    a = multiscale(f, c.scales)
    b = multiscale(torch.from_numpy(f), c.scales).numpy()
    np.testing.assert_array_equal(a, b)
    va, vb = tta_views(a, c.tta_views), tta_views(torch.from_numpy(a), c.tta_views)
    for k in va:
        np.testing.assert_array_equal(va[k], vb[k].numpy())


# ---- reference decoder --------------------------------------------------------------------
def test_probe_counts_frames_and_decodes(h264_video, vp9_video):
    c = VidclsConfig.tiny()
    for path, n in ((h264_video, 40), (vp9_video, 30)):
        info = probe(path)
        assert info.num_frames == n and info.width > 0
        frames, _ = load_frames(path.read_bytes(), c)
        assert frames.shape == (16, 64, 64, 3) and frames.dtype == np.uint8
        frames2, _ = load_frames(path, c)
        np.testing.assert_array_equal(frames, frames2)


def test_decode_exact_indices_and_short_video(video_factory):
    path = video_factory("short.mp4", n=5)
    frames, info = load_frames(path, VidclsConfig.tiny())
    assert info.num_frames == 5
    idx = sample_indices(5, 16)
    single = decode_frames(path, np.array([idx[-1]]), 64)
    np.testing.assert_array_equal(frames[-1], single[0])  # repeated frames are the same frame
    np.testing.assert_array_equal(frames[0], frames[1])


@pytest.mark.parametrize("data,code", [(b"", "empty"), (b"not a video at all" * 50, "not_a_video")])
def test_bad_bytes_are_rejected_with_a_code(data, code):
    with pytest.raises(VideoError) as err:
        load_frames(data, VidclsConfig.tiny())
    assert err.value.code == code
