"""The formats users have: every codec/container pair of tests/fixtures/real_world.py is accepted,
counted and decoded frame for frame as FFmpeg's command line shows it, and a folder of them
classifies through the real server with zero errors.

Repeated frames: libtheora writes a zero-length packet for a frame it drops, an AVI writer an
empty chunk (a gap in the time stamps). Either is a frame showing the picture before it; before
the fix the empty packet reached the decoder as end-of-stream and a Theora file decoded as
``corrupt: only 8 of 75 frames``.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np
import pytest

from vidcls.config import InputLimits, VidclsConfig
from vidcls.video import decode_frames, load_frames, probe

from tests.fixtures.bad_inputs import corpus_config
from tests.fixtures.real_world import ffmpeg_frames, pyav_write

SIZE = 64
ATOL = 1e-5  # served probabilities vs the PyTorch reference


def _empty_packets(path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for p in container.demux(container.streams.video[0]) if p.size == 0 and p.pts is not None)


def test_theora_with_dropped_frames_counts_and_decodes_every_frame(real_world_folder):
    _, files = real_world_folder
    theora = next(f for f in files if f.codec == "theora")
    assert _empty_packets(theora.path) >= 5  # the premise: libtheora dropped frames as empty packets
    info = probe(theora.path)
    assert info.num_frames == 75  # every frame the encoder was given, dropped ones included
    frames = decode_frames(theora.path, np.arange(info.num_frames), SIZE, info.num_frames)
    reference = ffmpeg_frames(theora.path, SIZE)
    # FFmpeg stops after the last coded picture's duration; every frame it shows is ours, exactly.
    assert len(reference) >= info.num_frames - 5
    np.testing.assert_array_equal(frames[:len(reference)], reference[:info.num_frames])
    video, _ = load_frames(theora.path, corpus_config())
    assert video.shape == (16, 64, 64, 3)


def test_empty_packets_in_another_container_repeat_the_picture_before(tmp_path):
    """NUT keeps zero-length packets as they are: the decoder never sees them, each repeats the
    picture before it, and the probe counts them."""
    import av

    from tests.fixtures.videos import moving_frames

    src = pyav_write(tmp_path / "src.avi", moving_frames(8, 64, 48), "mjpeg", fmt="avi", pix_fmt="yuvj420p")
    dropped = {2, 3, 6}
    dst = tmp_path / "with_empty_packets.nut"
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="nut") as out:
        stream = inp.streams.video[0]
        copy = out.add_stream_from_template(stream)
        for i, packet in enumerate(p for p in inp.demux(stream) if p.dts is not None):
            if i in dropped:
                empty = av.Packet(0)
                empty.pts, empty.dts, empty.time_base = packet.pts, packet.dts, packet.time_base
                packet = empty
            packet.stream = copy
            out.mux(packet)
    assert _empty_packets(dst) == len(dropped)
    limits = dataclasses.replace(InputLimits(), allowed_containers=("nut",))
    info = probe(dst, limits)
    assert info.num_frames == 8
    ours = decode_frames(dst, np.arange(8), SIZE, 8, limits=limits)
    plain = decode_frames(src, np.arange(8), SIZE, 8)
    expected = [0, 1, 1, 1, 4, 5, 5, 7]  # a dropped frame shows the picture before it
    np.testing.assert_array_equal(ours, plain[expected])


@pytest.mark.timeout(300)
def test_every_real_world_pair_is_accepted_and_decoded_as_ffmpeg_shows_it(real_world_folder):
    _, files = real_world_folder
    assert len({(f.container, f.codec) for f in files}) >= 12
    problems = []
    for f in files:
        info = probe(f.path)
        if f.container not in info.container.split(",") or info.codec != f.codec:
            problems.append(f"{f.name}: probed as {info.container}/{info.codec}, expected {f.container}/{f.codec}")
            continue
        ours = decode_frames(f.path, np.arange(info.num_frames), SIZE, info.num_frames)
        reference = ffmpeg_frames(f.path, SIZE)
        n = min(len(reference), info.num_frames)
        if f.codec != "theora" and len(reference) != info.num_frames:
            problems.append(f"{f.name}: {info.num_frames} frames counted, FFmpeg shows {len(reference)}")
        diff = np.abs(ours[:n].astype(np.int16) - reference[:n].astype(np.int16)).reshape(n, -1).mean(axis=1)
        # Colour conversion differs slightly between FFmpeg versions for some pixel formats (DV's
        # 4:1:1, MPEG-2's chroma siting); a frame out of place differs by far more.
        if diff.max() > 3.0:
            problems.append(f"{f.name}: frame {int(diff.argmax())} differs from FFmpeg's by {diff.max():.1f} on average")
        video, _ = load_frames(f.path, VidclsConfig.tiny())
        assert video.shape == (16, 64, 64, 3)
    assert not problems, "\n".join(problems)


def test_avi_dropped_frames_are_repeats(tmp_path):
    """An AVI writer stores a dropped frame as an empty chunk: FFmpeg skips it and the time stamps
    jump. The frame is counted and shows the picture before it, as FFmpeg shows it."""
    import av

    from tests.fixtures.videos import moving_frames

    frames = moving_frames(6, 64, 48)
    path = tmp_path / "dropped.avi"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mjpeg", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        for pts, arr in zip([0, 1, 2, 5, 6, 7], frames):  # frames 3 and 4 dropped
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = pts
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    info = probe(path)
    assert info.num_frames == 8
    ours = decode_frames(path, np.arange(8), SIZE, 8)
    np.testing.assert_array_equal(ours, ffmpeg_frames(path, SIZE))
    np.testing.assert_array_equal(ours[3], ours[2])


@pytest.mark.server
@pytest.mark.timeout(600)
def test_a_folder_of_real_world_files_classifies_with_zero_errors(real_world_folder, triton_server, serving_config,
                                                                   reference_pipeline, tmp_path):
    from vidcls.client.classify import classify_paths

    folder, files = real_world_folder
    summary = classify_paths([str(folder)], triton_server.grpc_url, output=str(tmp_path / "out.csv"),
                             config=serving_config, progress=False, concurrency=4)
    assert summary.failed == 0, summary.errors
    assert summary.classified == len(files) and len(summary.records) == len(files)
    by_path = {r["path"]: r for r in summary.records}
    for f in files:
        record = by_path[str(f.path)]
        served = np.array([record[c] for c in serving_config.classes])
        np.testing.assert_allclose(served, reference_pipeline.classify(f.path), atol=ATOL, rtol=0, err_msg=f.name)
