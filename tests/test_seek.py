"""Seeking decode: the same pixels as decoding from the start, used only where it pays,
and every unexpected case falls back to the pass from the start."""

from __future__ import annotations

import numpy as np
import pytest

from vidcls.sampling import sample_indices
from vidcls.video import VideoError, decode_frames, seek_plan

SIZE = 32
FRAMES = 240
GOP = {"g": "12"}


def _both(path, indices, **kw):
    stats_seek, stats_seq = {}, {}
    a = decode_frames(path, indices, SIZE, stats=stats_seek, **kw)
    b = decode_frames(path, indices, SIZE, seek=False, stats=stats_seq, **kw)
    return a, b, stats_seek, stats_seq


@pytest.mark.parametrize("name,codec,options,mode", [
    ("long_h264.mp4", "libx264", GOP, "seek"),                      # B-frames: decode order != display order
    ("long_h264_nob.mkv", "libx264", {**GOP, "bf": "0"}, "seek"),
    ("long_vp9.webm", "libvpx-vp9", {**GOP, "deadline": "realtime", "cpu-used": "8"}, "seek"),
    ("long_vp8.webm", "libvpx", GOP, "seek"),
    # open GOPs: leading B-frames reference the previous GOP; found by pts, they come out right
    ("long_h264_open.mkv", "libx264", {"x264-params": "keyint=12:open-gop=1:bframes=3"}, "seek"),
    ("long_hevc_open.mkv", "libx265", {"x265-params": "keyint=12:min-keyint=1:open-gop=1:log-level=error"}, "seek"),
    ("long_mpeg4.avi", "mpeg4", GOP, "sequential"),                 # not a seekable codec/container here
    ("long_h264_defaultgop.mp4", "libx264", None, "sequential"),   # one key frame: seeking cannot pay
])
def test_seek_gives_the_frames_of_a_pass_from_the_start(video_factory, name, codec, options, mode):
    path = video_factory(name, n=FRAMES, size=(96, 64), codec=codec, options=options, seed=3)
    indices = sample_indices(FRAMES, 8)
    a, b, stats, stats_seq = _both(path, indices)
    assert stats["mode"] == mode, stats
    assert stats_seq["mode"] == "sequential"
    np.testing.assert_array_equal(a, b)
    if mode == "seek":
        assert stats["packets"] < 0.6 * stats_seq["packets"], (stats, stats_seq)
        # every frame, not only the sampled ones: repeated and unsorted indices too
        idx = np.array([200, 3, 3, 239, 120, 0, 121])
        x, y, st, _ = _both(path, idx)
        np.testing.assert_array_equal(x, y)


def test_seek_plan_joins_targets_of_one_gop_and_counts_packets():
    pts = list(range(100))
    keys = [i % 10 == 0 for i in range(100)]
    runs, cost, sequential = seek_plan(pts, keys, [5, 55, 57, 95])
    assert runs == [(0, [5]), (50, [55, 57]), (90, [95])]
    assert (cost, sequential) == (6 + 8 + 6, 96)
    # a GOP that starts right after what a run decodes anyway continues that run (nothing to skip)
    runs, cost, _ = seek_plan(pts, keys, [9, 10])
    assert runs == [(0, [9, 10])] and cost == 11
    runs, cost, _ = seek_plan(pts, keys, [8, 10])  # one packet to skip: a seek
    assert runs == [(0, [8]), (10, [10])] and cost == 10


def test_seek_plan_follows_pts_not_decode_order():
    # decode order I P B B (pts 0 3 1 2) per GOP: ordinal 2 (pts 2) is the 4th packet, ordinal 10
    # (pts 10) the last one of the third GOP; the second GOP is skipped
    pts = [0, 3, 1, 2, 4, 7, 5, 6, 8, 11, 9, 10]
    keys = [i % 4 == 0 for i in range(12)]
    runs, cost, sequential = seek_plan(pts, keys, [2, 10])
    assert runs == [(0, [2]), (8, [10])]
    assert sequential == 12 and cost == 4 + 4


def test_seek_plan_starts_a_leading_picture_of_an_open_gop_one_gop_earlier():
    # second GOP in decode order: I(pts 6) B(pts 4) B(pts 5) P(pts 9) ...: pts 4 and 5 are shown
    # before their key frame and reference the first GOP
    pts = [0, 3, 1, 2, 6, 4, 5, 9, 7, 8]
    keys = [True, False, False, False, True, False, False, False, False, False]
    runs, cost, _ = seek_plan(pts, keys, [0, 4])  # ordinal 4 = pts 4, decode index 5
    assert runs == [(0, [0, 4])] and cost == 6
    runs, _, _ = seek_plan(pts, keys, [6])  # ordinal 6 = pts 6: the key frame itself
    assert runs == [(4, [6])]


def test_short_clip_keeps_the_pass_from_the_start(h264_video):
    stats = {}
    decode_frames(h264_video, sample_indices(40, 16), SIZE, stats=stats)
    assert stats["mode"] == "sequential"


def test_truncated_long_file_same_outcome_as_without_seeking(video_factory, tmp_path):
    path = video_factory("trunc_src.mkv", n=FRAMES, size=(96, 64), codec="libx264", options=GOP, seed=4)
    data = path.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * 0.85)])
    indices = sample_indices(FRAMES, 8)
    outcomes = []
    for seek in (True, False):
        try:
            outcomes.append(decode_frames(cut, indices, SIZE, num_frames=FRAMES, seek=seek))
        except VideoError as exc:
            outcomes.append(exc.code)
    if isinstance(outcomes[0], str):
        assert outcomes[0] == outcomes[1]
    else:
        np.testing.assert_array_equal(outcomes[0], outcomes[1])


def test_load_frames_on_a_long_file_equals_the_pass_from_the_start(video_factory):
    """load_frames (extraction, reference, calibration) and the decode model share decode_frames."""
    from vidcls.config import VidclsConfig
    from vidcls.video import load_frames

    path = video_factory("long_h264_load.mp4", n=FRAMES, size=(96, 64), codec="libx264", options=GOP, seed=5)
    config = VidclsConfig.tiny(num_frames=8, frame_size=SIZE)
    frames, info = load_frames(path, config)
    assert info.num_frames == FRAMES
    np.testing.assert_array_equal(frames, decode_frames(path, sample_indices(FRAMES, 8), SIZE, seek=False))


@pytest.mark.parametrize("seek", [True, False])
def test_decode_deadline_refuses_the_file(video_factory, seek):
    from vidcls.config import InputLimits

    path = video_factory("long_h264.mp4", n=FRAMES, size=(96, 64), codec="libx264", options=GOP, seed=3)
    with pytest.raises(VideoError) as err:
        decode_frames(path, sample_indices(FRAMES, 8), SIZE, seek=seek, limits=InputLimits(max_decode_s=-1.0))
    assert err.value.code == "max_decode_s"
    # the default budget is far away for a file like this
    assert decode_frames(path, sample_indices(FRAMES, 8), SIZE, seek=seek).shape == (8, SIZE, SIZE, 3)
