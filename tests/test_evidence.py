"""The evidence behind each answer: the ensemble's optional outputs, the reference's, the client's.

- The frame mapping: a weight over the rows a temporal model sees maps exactly onto the sampled
  frames (the rows are gathers and averages of them).
- Served == reference: VIEW_PROBABILITIES reproduce PROBABILITIES (mean over views, then models,
  within 1e-6), and every evidence output equals vidcls.reference.ReferencePipeline.evidence on
  the same file; FRAME_TIMES are the frames' own time stamps (variable frame rate included).
- The top moment is where the content that decides the class is, and moves with it
  (tests/fixtures/evidence.py trains a model whose answer such a stretch decides).
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tests.fixtures.evidence import ANIMATION, FPS, GAMING, MARKER_SPANS
from vidcls.config import VidclsConfig
from vidcls.sampling import multiscale, tta_views, view_frame_shares

ATOL = 1e-5


@pytest.mark.parametrize("config", [VidclsConfig(), VidclsConfig.tiny()], ids=["default", "tiny"])
def test_view_rows_map_onto_the_sampled_frames(config):
    """Run the production multi-scale and TTA functions on one-hot 'features' (row t = frame t):
    each output row is then exactly the mix of frames it holds."""
    T = config.num_frames
    mixes = tta_views(multiscale(np.eye(T), config.scales), config.tta_views)
    for view, mix in mixes.items():
        shares = view_frame_shares(T, config.scales, view)
        assert shares.shape == (config.view_lengths[view], T)
        np.testing.assert_allclose(shares, mix / mix.sum(axis=1, keepdims=True), atol=1e-12)
        np.testing.assert_allclose(shares.sum(axis=1), 1.0, atol=1e-12)


@pytest.fixture(scope="module")
def evidence_videos(video_factory, tmp_path_factory):
    from tests.fixtures.bad_inputs import write_video
    from tests.fixtures.videos import moving_frames

    vfr_ms = np.cumsum([0] + [40, 40, 400, 40, 1000, 40, 40, 120] * 5)[:40].tolist()
    root = tmp_path_factory.mktemp("evidence_videos")
    return {
        "h264": video_factory("e_h264.mp4", n=40, size=(160, 120), seed=21),
        "short": video_factory("e_short.mp4", n=9, size=(96, 64), seed=22),  # fewer frames than T: repeats
        "vp9": video_factory("e_vp9.webm", n=30, size=(176, 144), codec="libvpx-vp9", seed=23),
        "vfr": (write_video(root / "e_vfr.mkv", moving_frames(40, 128, 96), pts_ms=vfr_ms), vfr_ms),
    }


def _infer_all(url, config, path):
    import tritonclient.grpc as grpcclient

    from tests.fixtures.serving import video_bytes

    s = config.serving
    names = (s.probabilities, s.class_name, s.frame_numbers, s.frame_times, s.frame_attention, s.view_probabilities)
    data = video_bytes(path)
    with grpcclient.InferenceServerClient(url) as client:
        inp = grpcclient.InferInput(s.video, list(data.shape), "UINT8")
        inp.set_data_from_numpy(data)
        result = client.infer(s.ensemble, [inp], outputs=[grpcclient.InferRequestedOutput(n) for n in names])
    return {n: result.as_numpy(n)[0] for n in names}


@pytest.mark.server
def test_served_evidence_reproduces_probabilities_and_equals_reference(
        triton_server, serving_config, reference_pipeline, evidence_videos):
    s, cfg = serving_config.serving, serving_config
    for name, item in evidence_videos.items():
        path = item[0] if isinstance(item, tuple) else item
        got = _infer_all(triton_server.grpc_url, cfg, path)
        view_probs = got[s.view_probabilities]
        assert view_probs.shape == (cfg.num_models, len(cfg.tta_views), cfg.num_classes)
        # The per-view, per-model probabilities are what PROBABILITIES is the mean of.
        np.testing.assert_allclose(view_probs.mean(axis=1).mean(axis=0), got[s.probabilities], atol=1e-6, rtol=0)
        assert np.ptp(view_probs, axis=(0, 1)).max() > 1e-4, "views and models differ: a real table, not copies"

        want = reference_pipeline.evidence(path)
        np.testing.assert_allclose(got[s.probabilities], want.probabilities, atol=ATOL, rtol=0)
        np.testing.assert_allclose(view_probs, want.view_probabilities, atol=ATOL, rtol=0)
        np.testing.assert_allclose(got[s.frame_attention], want.frame_attention, atol=ATOL, rtol=0)
        np.testing.assert_array_equal(got[s.frame_numbers], want.frame_indices)
        np.testing.assert_array_equal(got[s.frame_times], want.frame_times)
        assert abs(float(got[s.frame_attention].sum()) - 1.0) < 1e-5, name
        assert got[s.frame_attention].min() >= 0

    # Time stamps are the frames' own: at 25 frames/s for the constant-rate files, the written
    # (irregular) pts for the variable-rate one.
    h264 = _infer_all(triton_server.grpc_url, cfg, evidence_videos["h264"])
    np.testing.assert_allclose(h264[s.frame_times], h264[s.frame_numbers] / 25.0, atol=1e-6)
    vfr_path, vfr_ms = evidence_videos["vfr"]
    vfr = _infer_all(triton_server.grpc_url, cfg, vfr_path)
    np.testing.assert_allclose(vfr[s.frame_times], np.asarray(vfr_ms)[vfr[s.frame_numbers]] / 1000.0, atol=1e-3)


@pytest.mark.server
def test_requests_without_evidence_get_only_what_they_ask(triton_server, serving_config, h264_video, grpc_infer):
    result = grpc_infer(h264_video)
    outputs = {o.name for o in result.get_response().outputs}
    assert outputs == {serving_config.serving.probabilities, serving_config.serving.class_name}


@pytest.mark.server
@pytest.mark.slow
def test_top_moment_is_where_the_deciding_content_is_and_moves_with_it(evidence_results, moment_videos):
    """`vidcls classify --evidence`: the marker stretch decides Gaming; the best moment is inside
    it, early in one video and late in the other; without a marker, Animation."""
    records = {r["path"].rsplit("/", 1)[-1]: r for r in map(json.loads, evidence_results["jsonl"].read_text().splitlines())}
    tops = {}
    for name, span in MARKER_SPANS.items():
        rec = records[moment_videos[name].name]
        assert rec["class"] == GAMING, rec
        assert len(rec["moments"]) == 3
        weights = [m["weight"] for m in rec["moments"]]
        assert weights == sorted(weights, reverse=True)
        top = rec["moments"][0]
        assert span[0] <= top["frame"] <= span[1], (name, rec["moments"])
        assert top["t"] == pytest.approx(top["frame"] / FPS, abs=1e-3)
        tops[name] = top["t"]
    assert tops["late"] - tops["early"] > 2.0  # the stretch moved by 3 s; so did the moment
    assert records[moment_videos["none"].name]["class"] == ANIMATION
    # The per-view table is there and averages to the record's probabilities.
    from vidcls.client.evidence import mean_probabilities

    for name in MARKER_SPANS:
        rec = records[moment_videos[name].name]
        expected = [rec[c] for c in VidclsConfig().classes]
        np.testing.assert_allclose(mean_probabilities(rec["view_probabilities"]), expected, atol=1e-6)
    for file_name, code in evidence_results["bad"].items():
        assert records[file_name]["error"].split(", ")[-1].startswith(f"{code}:"), records[file_name]
        assert records[file_name]["moments"] is None


@pytest.mark.server
def test_classify_evidence_to_csv_reads_back(moment_server, moment_videos, tmp_path):
    from vidcls.client.classify import classify_paths
    from vidcls.client.evidence import parse_field

    out = tmp_path / "r.csv"
    summary = classify_paths([moment_videos["late"]], moment_server.grpc_url, output=str(out), evidence=2,
                             progress=False)
    assert summary.failed == 0
    with open(out, newline="") as f:
        (row,) = list(csv.DictReader(f))
    moments = parse_field(row["moments"])
    assert len(moments) == 2 and MARKER_SPANS["late"][0] <= moments[0]["frame"] <= MARKER_SPANS["late"][1]
    assert set(parse_field(row["view_probabilities"])) == {"temporal_0"}


@pytest.mark.server
def test_evidence_against_a_model_without_it_is_a_usage_error(triton_server, serving_config, h264_video, capsys):
    """A model without the evidence outputs (here the probe; in practice a repository exported
    without them) would fail every file: one line and exit code 2 instead."""
    from vidcls.cli import main

    code = main(["classify", str(h264_video), "--url", triton_server.grpc_url, "--model", serving_config.serving.probe,
                 "--evidence", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "has no evidence outputs" in err and len(err.strip().splitlines()) == 1, err


def test_top_moments_add_up_repeated_frames_and_rank():
    """A video shorter than T samples frames twice: each frame is one moment with its summed weight."""
    from vidcls.client.evidence import top_moments

    indices = [0, 0, 1, 1, 2, 3, 3, 3]
    times = [0.0, 0.0, 0.04, 0.04, 0.08, 0.12, 0.12, 0.12]
    weights = [0.05, 0.05, 0.2, 0.2, 0.3, 0.05, 0.1, 0.05]
    got = top_moments(indices, times, weights, count=3)
    assert [m["frame"] for m in got] == [1, 2, 3]
    assert [m["weight"] for m in got] == pytest.approx([0.4, 0.3, 0.2])
    assert [m["t"] for m in got] == pytest.approx([0.04, 0.08, 0.12])
    assert len(top_moments(indices, times, weights, count=10)) == 4


def test_frame_times_without_pts_spread_over_the_duration():
    from vidcls.video import ProbeResult, frame_times

    info = ProbeResult("matroska", "h264", 64, 48, num_frames=100, duration_s=4.0, size_bytes=1, frame_pts_s=None)
    np.testing.assert_allclose(frame_times(info, [0, 50, 99]), [0.0, 2.0, 3.96], atol=1e-6)
    info = ProbeResult("mp4", "h264", 64, 48, num_frames=3, duration_s=1.0, size_bytes=1,
                       frame_pts_s=np.array([0.0, 0.5, 0.9]))
    np.testing.assert_allclose(frame_times(info, [0, 2, 2]), [0.0, 0.9, 0.9], atol=1e-6)
