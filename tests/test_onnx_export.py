"""ONNX export of the backbone and temporal models: dynamic shapes, parity with PyTorch, loud failure."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
import torch

from vidcls.config import VidclsConfig
from vidcls.export import parity
from vidcls.export.onnx_export import export_backbone_onnx, export_temporal_onnx
from vidcls.models.backbone import build_backbone
from vidcls.models.temporal import SoftmaxHead, SuperEnhancedTemporalModel
from vidcls.ort import make_session, resolve_providers


def _temporal(config: VidclsConfig, seed: int = 0) -> SuperEnhancedTemporalModel:
    torch.manual_seed(seed)
    return SuperEnhancedTemporalModel(config.temporal).eval()


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_temporal_export_is_dynamic_and_matches_torch(tiny_config, tmp_path):
    import onnx

    model = _temporal(tiny_config)
    path = export_temporal_onnx(model, tiny_config, tmp_path / "temporal.onnx")
    graph = onnx.load(str(path)).graph
    s = tiny_config.serving
    assert [i.name for i in graph.input] == [s.sequence]
    assert [o.name for o in graph.output] == [s.probs, s.attention]
    assert _dims(graph.input[0]) == ["batch", "length", tiny_config.feature_dim]
    assert _dims(graph.output[0]) == ["batch", tiny_config.num_classes]
    assert _dims(graph.output[1]) == ["batch", "length"]
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # The LSTM goes out as fused ONNX LSTM nodes (one bidirectional node per layer).
    lstms = [n for n in graph.node if n.op_type == "LSTM"]
    assert len(lstms) == tiny_config.temporal.num_lstm_layers
    # The served lengths of the tiny config are all multiples of 9, which is exactly how a baked
    # reshape slips through: check lengths that are not, and batch sizes other than the export's.
    report = parity.check_temporal(model, path, tiny_config, lengths=[7, 9, 18, 27, 31, 64, 200],
                                   batches=(1, 2, 5))
    assert report.ok, str(report)
    assert report.worst <= parity.PROBS_ATOL


def test_temporal_export_outputs_probabilities_and_attention(tiny_config, tmp_path):
    model = _temporal(tiny_config, seed=3)
    path = export_temporal_onnx(model, tiny_config, tmp_path / "t.onnx")
    x = np.abs(np.random.default_rng(1).standard_normal((4, 27, tiny_config.feature_dim))).astype(np.float32)
    probs, attention = make_session(path, intra_op_threads=1).run(None, {tiny_config.serving.sequence: x})
    assert probs.shape == (4, tiny_config.num_classes) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert attention.shape == (4, 27) and attention.dtype == np.float32
    np.testing.assert_allclose(attention.sum(axis=1), 1.0, atol=1e-6)
    with torch.inference_mode():
        ref = SoftmaxHead(model)(torch.from_numpy(x)).numpy()
        _, ref_weights = model(torch.from_numpy(x), return_attention=True)
    np.testing.assert_allclose(probs, ref, atol=parity.PROBS_ATOL, rtol=0)
    np.testing.assert_allclose(attention, ref_weights.numpy(), atol=parity.PROBS_ATOL, rtol=0)
    assert np.ptp(attention, axis=1).min() > 0, "weights that differ per row, not a constant"


def test_parity_lengths_cover_every_served_view(tiny_config):
    default = VidclsConfig()
    assert {36, 73, 109} <= set(parity.temporal_lengths(default))
    assert set(tiny_config.view_lengths.values()) <= set(parity.temporal_lengths(tiny_config))
    assert set(parity.EXTRA_LENGTHS) <= set(parity.temporal_lengths(tiny_config))


def test_parity_check_catches_a_baked_sequence_length(tiny_config, tmp_path):
    """The naive export (TorchScript exporter on the original module) bakes the length into the
    attention reshapes; the parity check must reject it, not pass it."""
    model = _temporal(tiny_config)
    path = tmp_path / "naive.onnx"
    s = tiny_config.serving
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_NaiveHead(model).eval(), (torch.zeros(2, 18, tiny_config.feature_dim),), str(path),
                          dynamo=False, input_names=[s.sequence], output_names=[s.probs, s.attention],
                          dynamic_axes={s.sequence: {0: "batch", 1: "length"}}, opset_version=17)
    report = parity.check_temporal(model, path, tiny_config)
    assert not report.ok
    failing = {r.shape[1] for r in report.rows if r.error > report.tolerance}
    assert {5, 9, 50, 128} <= failing  # not multiples of 18
    with pytest.raises(parity.ParityError, match="parity check failed"):
        report.raise_if_failed()


class _NaiveHead(torch.nn.Module):
    """The original module's own forward (probabilities and attention weights), as a naive export sees it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        logits, weights = self.model(x, return_attention=True)
        return torch.softmax(logits, dim=-1), weights


class _DivergentModel(SuperEnhancedTemporalModel):
    """A model whose PyTorch forward is not the function the exporter writes (an extra logit bias):
    exactly the kind of mismatch the parity check exists for."""

    def forward(self, x, lengths=None, return_attention=False):
        logits, weights = super().forward(x, lengths, return_attention=True)
        logits = logits + torch.tensor([2.0] + [0.0] * (logits.shape[-1] - 1))
        return (logits, weights) if return_attention else logits


class _DivergentAttention(SuperEnhancedTemporalModel):
    """Same probabilities as the export, different attention weights (the evidence would lie)."""

    def forward(self, x, lengths=None, return_attention=False):
        logits, weights = super().forward(x, lengths, return_attention=True)
        return (logits, weights.flip(-1)) if return_attention else logits


@pytest.mark.parametrize("divergent", [_DivergentModel, _DivergentAttention], ids=["probs", "attention"])
def test_export_fails_loudly_and_writes_nothing(tiny_config, tmp_path, divergent):
    torch.manual_seed(0)
    model = divergent(tiny_config.temporal).eval()
    path = tmp_path / "bad.onnx"
    with pytest.raises(parity.ParityError) as info:
        export_temporal_onnx(model, tiny_config, path)
    assert not info.value.report.ok
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind either


def test_backbone_export_uint8_frames_in_features_out(tiny_config, tmp_path):
    import onnx

    backbone = build_backbone(tiny_config, "none", seed=0)
    path = export_backbone_onnx(backbone, tiny_config, tmp_path / "backbone.onnx")
    graph = onnx.load(str(path)).graph
    s, size = tiny_config.serving, tiny_config.frame_size
    assert [i.name for i in graph.input] == [s.frames]
    assert [o.name for o in graph.output] == [s.features]
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert _dims(graph.input[0]) == ["frames", size, size, 3]
    assert _dims(graph.output[0]) == ["frames", tiny_config.feature_dim]
    report = parity.check_backbone(backbone, path, tiny_config, batches=(1, 3, tiny_config.num_frames))
    assert report.ok, str(report)
    # Normalization is inside the graph: raw decoder frames give the PyTorch module's features.
    frames = np.random.default_rng(0).integers(0, 256, (5, size, size, 3), dtype=np.uint8)
    got = make_session(path, intra_op_threads=1).run(None, {s.frames: frames})[0]
    with torch.inference_mode():
        ref = backbone(torch.from_numpy(frames)).numpy()
    assert np.max(np.abs(got - ref)) / np.max(np.abs(ref)) <= parity.FEATURES_RTOL


def test_session_providers_resolve_and_missing_gpu_is_an_error(tiny_config, tmp_path):
    resolved = resolve_providers(("cuda", "tensorrt"), config=tiny_config)  # put in priority order
    names = [n for n, _ in resolved]
    assert names == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    trt = resolved[0][1]
    # TensorRT 11 computes in the graph's types: no precision options (vidcls.export.fp16 instead).
    assert not {"trt_fp16_enable", "trt_int8_enable", "trt_layer_norm_fp32_fallback"} & set(trt)
    assert trt["trt_max_workspace_size"] == tiny_config.serving.trt_workspace_bytes
    assert resolve_providers(None) == [("CPUExecutionProvider", {})]
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime build has CUDA")
    path = export_backbone_onnx(build_backbone(tiny_config), tiny_config, tmp_path / "b.onnx", check=False)
    with pytest.raises(RuntimeError, match="not available"):
        make_session(path, providers=["cuda"])


@pytest.mark.slow
def test_default_size_temporal_model_at_served_lengths(tmp_path):
    """The production temporal model (65M parameters) at L = 36, 73, 109, batch 1."""
    config = VidclsConfig()
    model = _temporal(config)
    assert sum(p.numel() for p in model.parameters()) > 60_000_000
    start = time.perf_counter()
    path = export_temporal_onnx(model, config, tmp_path / "temporal.onnx", check=False)
    report = parity.check_temporal(model, path, config, lengths=sorted(set(config.view_lengths.values())),
                                   batches=(1,))
    assert [r.shape[1] for r in report.rows] == [36, 73, 109]
    assert report.ok, str(report)
    print(report, f"\nexport + parity {time.perf_counter() - start:.1f} s")


def test_demo_config_single_layer_lstm_exports(tmp_path):
    """The demo's temporal model (one LSTM layer: no inter-layer dropout, 4 heads) at its served lengths."""
    config = VidclsConfig.demo()
    model = _temporal(config, seed=1)
    path = export_temporal_onnx(model, config, tmp_path / "demo.onnx")  # parity at 36/73/109 + extras inside
    report = parity.check_temporal(model, path, config, lengths=[36, 73, 109], batches=(2,))
    assert report.ok, str(report)
