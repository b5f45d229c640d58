"""Opt-in INT8 backbone: calibration on real decoded frames, the cosine check that fails an
export, the repository that serves the quantized graph, and a real server running it."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import onnx
import pytest

from vidcls.config import VidclsConfig
from vidcls.export.parity import ParityError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _with(config: VidclsConfig, **serving) -> VidclsConfig:
    return config.replace(serving=dataclasses.replace(config.serving, **serving))


@pytest.fixture(scope="module")
def calibration_dir(video_factory, tmp_path_factory):
    folder = tmp_path_factory.mktemp("int8_calibration")
    for i, (codec, name) in enumerate([("libx264", "a.mp4"), ("libvpx-vp9", "b.webm")]):
        shutil.copy(video_factory(f"calib_{name}", n=36, size=(128, 96), codec=codec, seed=10 + i), folder / name)
    (folder / "notes.txt").write_text("not a video")  # ignored by the folder walk
    return folder


@pytest.fixture(scope="module")
def fp32_backbone(tmp_path_factory, serving_config):
    import torch

    from vidcls.export.onnx_export import export_backbone_onnx
    from vidcls.models.backbone import build_backbone

    torch.manual_seed(0)
    backbone = build_backbone(serving_config, "none")
    return export_backbone_onnx(backbone, serving_config, tmp_path_factory.mktemp("int8") / "model.onnx")


def test_calibration_frames_are_the_served_frames_split_even_odd(calibration_dir, serving_config):
    from vidcls.export.quantize import calibration_frames
    from vidcls.video import load_frames

    videos = sorted(calibration_dir.glob("*.mp4")) + sorted(calibration_dir.glob("*.webm"))
    config = _with(serving_config, int8_calibration_frames=1000, int8_check_frames=1000)
    calib, check = calibration_frames(videos, config)
    first, _ = load_frames(videos[0], config)
    T = config.num_frames
    assert calib.shape == (len(videos) * T // 2, config.frame_size, config.frame_size, 3) == check.shape
    np.testing.assert_array_equal(calib[:T // 2], first[0::2])
    np.testing.assert_array_equal(check[:T // 2], first[1::2])
    thin, _ = calibration_frames(videos, _with(serving_config, int8_calibration_frames=5, int8_check_frames=3))
    assert len(thin) == 5


def test_calibration_skips_bad_videos_and_refuses_none(calibration_dir, tmp_path, serving_config):
    from vidcls.export.quantize import calibration_frames

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    calib, _ = calibration_frames([bad, calibration_dir / "a.mp4"], serving_config)
    assert len(calib) > 0
    with pytest.raises(ValueError, match="no calibration video"):
        calibration_frames([bad], serving_config)


def test_int8_graph_is_quantized_and_passes_the_feature_check(fp32_backbone, calibration_dir, serving_config):
    from vidcls.export.quantize import check_int8, quantize_backbone
    from vidcls.video import load_frames

    out = quantize_backbone(fp32_backbone, fp32_backbone.with_name("model_int8.onnx"), serving_config,
                            [calibration_dir / "a.mp4", calibration_dir / "b.webm"])
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    frames, _ = load_frames(calibration_dir / "a.mp4", serving_config)
    report = check_int8(out, fp32_backbone, serving_config, frames)
    assert report.ok and 0 < report.worst <= 1 - serving_config.serving.int8_min_cosine


def test_int8_check_failure_writes_nothing(fp32_backbone, calibration_dir, serving_config):
    from vidcls.export.quantize import quantize_backbone

    strict = _with(serving_config, int8_min_cosine=1.0)  # INT8 features are never exactly the FP32 ones
    target = fp32_backbone.with_name("strict_int8.onnx")
    with pytest.raises(ParityError, match="1 - cos"):
        quantize_backbone(fp32_backbone, target, strict, [calibration_dir / "a.mp4"])
    assert not target.exists()
    assert not list(target.parent.glob(".strict_int8*"))


def test_precision_is_validated_and_names_the_served_file():
    assert VidclsConfig().backbone_onnx_file == "model.onnx"
    assert _with(VidclsConfig(), backbone_precision="int8").backbone_onnx_file == "model_int8.onnx"
    with pytest.raises(ValueError, match="backbone_precision"):
        _with(VidclsConfig(), backbone_precision="bf16")


def test_gpu_target_refuses_int8_in_one_line(tmp_path, capsys):
    """TensorRT takes only symmetric signed INT8 Q/DQ; the QDQ graph's activations are unsigned."""
    from vidcls.cli import main
    from vidcls.export.repository import ExportRefused, build_repository

    config = _with(VidclsConfig(), backbone_precision="int8")
    with pytest.raises(ExportRefused, match="cpu target only"):
        build_repository(None, tmp_path / "repo", target="gpu", configs_only=True, config=config)
    config.save(tmp_path / "int8.json")
    assert main(["export", "--configs-only", "--config", str(tmp_path / "int8.json"), str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cpu target only" in err[0]


def test_int8_export_needs_calibration(tiny_checkpoints, serving_config, tmp_path):
    from vidcls.export.repository import build_repository

    with pytest.raises(ValueError, match="int8-calibration"):
        build_repository(tiny_checkpoints, tmp_path / "repo", target="cpu",
                         config=_with(serving_config, backbone_precision="int8"))


@pytest.fixture(scope="module")
def int8_repository(tiny_checkpoints, calibration_dir, tmp_path_factory):
    from vidcls.export.repository import build_repository

    return build_repository(tiny_checkpoints, tmp_path_factory.mktemp("int8_repo") / "repo", target="cpu",
                            int8_calibration=[calibration_dir])


def test_int8_repository_is_complete(int8_repository):
    from vidcls.export.repository import validate_repository
    from vidcls.config import REPOSITORY_CONFIG_FILE

    config = VidclsConfig.load(int8_repository / REPOSITORY_CONFIG_FILE)
    assert config.serving.backbone_precision == "int8"
    bb = int8_repository / config.serving.backbone / "1"
    assert (bb / "model.onnx").exists() and (bb / "model_int8.onnx").exists()
    import json

    report = json.loads((bb / "int8_report.json").read_text())
    assert report["features"]["worst_cosine"] >= config.serving.int8_min_cosine
    assert report["predictions"]["videos"] == 2  # the two calibration videos; notes.txt is not one
    assert 0 < report["predictions"]["max_abs_prob_diff"] < 0.05
    for row in report["predictions"]["rows"]:
        assert abs(sum(row["int8"]) - 1) < 1e-5 and row["top1_agrees"] == (
            max(range(4), key=row["fp32"].__getitem__) == max(range(4), key=row["int8"].__getitem__))
    (bb / "model_int8.onnx").rename(bb / "moved.onnx")
    try:
        with pytest.raises(ValueError, match="model_int8.onnx"):
            validate_repository(int8_repository)
    finally:
        (bb / "moved.onnx").rename(bb / "model_int8.onnx")


def test_real_server_serves_the_int8_backbone(int8_repository, tmp_path_factory, reference_pipeline,
                                              serving_config, h264_video):
    """Close to the FP32 reference, but not equal: the served backbone is the quantized graph."""
    import tritonclient.grpc as grpcclient

    from tests.fixtures.serving import running_server, video_bytes

    s = serving_config.serving
    gen = running_server(int8_repository, tmp_path_factory, "triton_int8")
    server = next(gen)
    try:
        data = video_bytes(h264_video)
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            inp = grpcclient.InferInput(s.video, list(data.shape), "UINT8")
            inp.set_data_from_numpy(data)
            got = client.infer(s.ensemble, [inp]).as_numpy(s.probabilities)[0]
    finally:
        gen.close()
    expected = reference_pipeline.classify(h264_video)
    diff = float(np.abs(got - expected).max())
    assert np.isclose(got.sum(), 1.0, atol=1e-5)
    print(f"int8 served vs FP32 reference: max |diff| {diff:.3g}")
    assert 1e-7 < diff < 0.05, diff


def test_export_command_line_passes_the_calibration_videos(monkeypatch, tiny_checkpoints):
    import argparse

    from vidcls.export import repository

    parser = argparse.ArgumentParser()
    repository.add_arguments(parser)
    ckpts = [str(tiny_checkpoints / "model_0"), str(tiny_checkpoints / "model_1")]  # checked before the export
    args = parser.parse_args([*ckpts, "repo", "--target", "cpu", "--int8-calibration", "a.mp4", "clips/"])
    seen = {}
    monkeypatch.setattr(repository, "build_repository", lambda *a, **kw: seen.update(args=a, **kw))
    assert repository.run(args) == 0
    assert seen["args"] == (ckpts, "repo")
    assert seen["int8_calibration"] == ["a.mp4", "clips/"]
