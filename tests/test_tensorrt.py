"""TensorRT engines and ORT GPU providers. Engine tests need an NVIDIA GPU (marked ``gpu``: they
skip on CPU machines); the profile/accelerator settings are plain data and are checked everywhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidcls.config import VidclsConfig
from vidcls.export import backend_contract as bc
from vidcls.export import tensorrt as vtrt


def test_profiles_cover_every_view_length_and_batch():
    config = VidclsConfig()
    (p,) = vtrt.profiles(config, "temporal")
    assert p.name == config.serving.sequence
    assert p.min == (1, 36, 1280) and p.max == (config.serving.temporal_batch, 109, 1280)
    assert p.opt == (config.serving.temporal_batch, 73, 1280)
    for length in config.view_lengths.values():
        assert p.min[1] <= length <= p.max[1]
    (frames,) = vtrt.profiles(config, "backbone", rank=4)
    assert frames.max == (config.serving.backbone_batch * 64, 256, 256, 3) and frames.min[0] == 1
    (video,) = vtrt.profiles(config, "backbone")
    assert video.max == (config.serving.backbone_batch, 64, 256, 256, 3)
    with pytest.raises(ValueError):
        vtrt.profiles(config, "nope")


def test_ort_accelerator_settings_are_triton_strings(tiny_config):
    ((name, params),) = vtrt.ort_gpu_accelerators(tiny_config, "temporal", cache_path="/cache")
    assert name == "tensorrt"
    assert all(isinstance(v, str) for v in params.values())
    assert not set(params) & set(bc.IGNORED_BY_TENSORRT)  # precision is the graph's (TensorRT 11)
    assert params["max_workspace_size_bytes"] == str(tiny_config.serving.trt_workspace_bytes)
    s = tiny_config.serving
    assert params["trt_profile_max_shapes"] == f"{s.sequence}:{s.temporal_batch}x27x{tiny_config.feature_dim}"
    assert params["trt_engine_cache_path"] == "/cache"


def test_ort_session_providers_carry_the_engine_profile(tiny_config):
    (trt_name, trt), (cuda_name, _) = vtrt.ort_session_providers(tiny_config, "backbone", rank=4)
    assert (trt_name, cuda_name) == ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    s, size = tiny_config.serving, tiny_config.frame_size
    assert trt["trt_profile_min_shapes"] == f"{s.frames}:1x{size}x{size}x3"
    assert "trt_fp16_enable" not in trt and "trt_layer_norm_fp32_fallback" not in trt


def test_workspace_fits_a_10gb_mig_slice():
    # Two engines (backbone + one temporal) building at once must leave room for their weights and
    # activations on a 1g.10gb slice.
    assert VidclsConfig().serving.trt_workspace_bytes <= 3 * 1024 ** 3


def test_missing_tensorrt_is_a_clear_error(tmp_path, tiny_config):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(vtrt.TensorRTUnavailable, match="pip install"):
            vtrt.build_engine(tmp_path / "x.onnx", tmp_path / "x.plan", tiny_config, "temporal")
    else:
        pytest.skip("tensorrt is installed here")


@pytest.fixture(scope="module")
def gpu_onnx(tmp_path_factory):
    from vidcls.export.onnx_export import export_backbone_onnx, export_temporal_onnx
    from vidcls.models.backbone import build_backbone
    from vidcls.models.temporal import SuperEnhancedTemporalModel

    config = VidclsConfig.tiny()
    root = tmp_path_factory.mktemp("trt")
    torch.manual_seed(0)
    model = SuperEnhancedTemporalModel(config.temporal).eval()
    temporal = export_temporal_onnx(model, config, root / "temporal.onnx")
    backbone = export_backbone_onnx(build_backbone(config), config, root / "backbone.onnx")
    return config, root, temporal, backbone


@pytest.mark.gpu
def test_temporal_engine_matches_onnxruntime(gpu_onnx):
    config, root, temporal, _ = gpu_onnx
    plan = vtrt.build_engine(temporal, root / "temporal.plan", config, "temporal")  # parity inside
    report = vtrt.check_engine(plan, temporal, config, "temporal")
    assert report.ok, str(report)
    print(report)


@pytest.mark.gpu
def test_backbone_engine_matches_onnxruntime(gpu_onnx):
    config, root, _, backbone = gpu_onnx
    plan = vtrt.build_engine(backbone, root / "backbone.plan", config, "backbone")
    runner = vtrt.EngineRunner(plan)
    frames = np.random.default_rng(0).integers(0, 256, (config.num_frames, config.frame_size,
                                                        config.frame_size, 3), dtype=np.uint8)
    out = runner(frames)
    assert out.shape == (config.num_frames, config.feature_dim)


@pytest.mark.gpu
def test_ort_tensorrt_and_cuda_providers_match_cpu(gpu_onnx):
    import onnxruntime as ort

    from vidcls.ort import make_session

    config, root, temporal, _ = gpu_onnx
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed")
    x = np.abs(np.random.default_rng(0).standard_normal((3, 27, config.feature_dim))).astype(np.float32)
    feeds = {config.serving.sequence: x}
    ref = make_session(temporal).run(None, feeds)[0]
    cuda = make_session(temporal, providers=["cuda"]).run(None, feeds)[0]
    np.testing.assert_allclose(cuda, ref, atol=1e-4)
    if "TensorrtExecutionProvider" in ort.get_available_providers():
        trt = make_session(temporal, providers=vtrt.ort_session_providers(config, "temporal", cache_dir=root / "ort_trt"),
                           ).run(None, feeds)[0]
        np.testing.assert_allclose(trt, ref, atol=vtrt.TRT_PROBS_ATOL)
