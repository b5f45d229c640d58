"""The gpu target's mixed-precision FP16 graphs (vidcls.export.fp16), checked without a GPU.

- Precision: which ops compute in FP16 and which in FP32, the graphs' inputs and outputs keep
  their types, the weights are stored in FP16, and the repository records what it holds.
- Numbers: ONNX Runtime's CPU provider has no FP16 kernels for most ops, so the FP16 graphs run
  through vidcls.export.fp16.emulation_graph (FP32 arithmetic, every FP16 tensor rounded to FP16
  after the node that makes it, FP16 weights). The served pipeline with those graphs stays
  within the GPU tolerance the README states (every probability within 1e-2 of the PyTorch
  reference, the same class on >= 99.5 % of the videos) on generated and real-world clips.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from vidcls.config import PRECISION_RECORD_FILE, VidclsConfig
from vidcls.export import fp16
from vidcls.export.parity import GPU_SAME_CLASS_MIN, GPU_SERVED_PROBS_ATOL

# What the served graphs must compute in FP16 (the heavy ops) and keep in FP32.
FP16_OPS = {"Conv", "MatMul", "Gemm"}
FP32_OPS = {"LayerNormalization", "Softmax", "LSTM", "ReduceMean", "ReduceSum", "GlobalAveragePool"}


@pytest.fixture(scope="module")
def fp16_repository(tiny_checkpoints, tmp_path_factory):
    from vidcls.export.repository import build_repository

    return build_repository(tiny_checkpoints, tmp_path_factory.mktemp("fp16") / "repo", target="gpu", decode="cpu")


def _graphs(repo, config):
    return {name: repo / name / "1" / "model.onnx" for name in [config.serving.backbone, *config.temporal_model_names()]}


def test_emulation_rounds_every_fp16_tensor_like_the_gpu(tmp_path):
    """The emulation is live: an FP16 Add's result is rounded to FP16 (ONNX Runtime keeps the
    rounding Casts), its FP16 weight is the FP16 value, and the FP32 output Cast adds nothing."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.array([0.1, 1e-4, 3.3333, 0.7], np.float32)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["s"]), helper.make_node("Softmax", ["s"], ["y"], axis=-1)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    half = fp16.convert(model, {"Softmax"})
    summary = fp16.precision_summary(half)
    assert summary["ops"]["FLOAT16"] == {"Add": 1} and summary["ops"]["FLOAT"] == {"Softmax": 1}
    assert summary["inputs"] == {"x": "FLOAT"} and summary["outputs"] == {"s": "FLOAT", "y": "FLOAT"}
    assert summary["weight_bytes"] == {"FLOAT16": 8}
    onnx.save(half, str(tmp_path / "half.onnx"))
    x = np.array([[1.0001, 2.0003, 0.33333, -7.77777]], np.float32)
    s, y = fp16.emulation_session(tmp_path / "half.onnx").run(None, {"x": x})
    # FP16 inputs and weight, the sum in FP32, rounded to FP16 as the FP16 tensor holds it.
    want = (x.astype(np.float16).astype(np.float32) + w.astype(np.float16).astype(np.float32)).astype(np.float16)
    np.testing.assert_array_equal(s, want.astype(np.float32))
    assert np.abs(s - (x + w)).max() > 1e-4  # the rounding is really there
    e = np.exp(s - s.max())
    np.testing.assert_allclose(y, e / e.sum(), rtol=1e-6)  # Softmax in FP32 on the rounded sum


def test_gpu_graphs_compute_in_fp16_and_keep_their_io_types(fp16_repository, tiny_checkpoints):
    config = VidclsConfig.load(fp16_repository / "vidcls_config.json")
    s = config.serving
    assert (s.backbone_precision, s.temporal_precision, s.gpu_precision) == ("fp16", "fp16", "fp16")
    record = json.loads((fp16_repository / PRECISION_RECORD_FILE).read_text())
    import onnx

    for name, path in _graphs(fp16_repository, config).items():
        summary = fp16.precision_summary(onnx.load(str(path)))
        assert record[name] == summary, f"{PRECISION_RECORD_FILE} records what {name} serves"
        half, full = set(summary["ops"].get("FLOAT16", {})), set(summary["ops"].get("FLOAT", {}))
        assert half & FP16_OPS, f"{name}: no heavy op computes in FP16: {summary['ops']}"
        assert not half & set(s.fp16_fp32_ops), f"{name}: {half & set(s.fp16_fp32_ops)} must stay FP32"
        assert full <= set(s.fp16_fp32_ops) | {"ConstantOfShape"}, f"{name}: FP32 compute beyond the list: {full}"
        assert not full & FP16_OPS
        if name == s.backbone:
            assert summary["inputs"] == {s.frames: "UINT8"} and summary["outputs"] == {s.features: "FLOAT"}
            assert set(summary["weight_bytes"]) <= {"FLOAT16", "INT64"}  # every conv weight in FP16
        else:
            assert summary["inputs"] == {s.sequence: "FLOAT"}
            assert summary["outputs"] == {s.probs: "FLOAT", s.attention: "FLOAT"}
            assert {"LSTM", "LayerNormalization", "Softmax"} <= full
            # FP32 weights: the LSTMs' and at most the LayerNorms' (the exporter shares equal
            # initializers, e.g. all-zero biases) and the attention scale's exponent.
            t = config.temporal
            dirs = 2 if t.bidirectional else 1
            lstm = sum(dirs * (4 * t.hidden_dim * ((t.hidden_dim if i == 0 else dirs * t.hidden_dim) + t.hidden_dim)
                               + 8 * t.hidden_dim) for i in range(t.num_lstm_layers))
            norms = 2 * (3 * t.hidden_dim + dirs * t.hidden_dim + 768 + 512 + 256)
            assert 4 * lstm <= summary["weight_bytes"]["FLOAT"] <= 4 * (lstm + norms + 1)


def test_onnxruntime_models_skip_the_cpu_layout_pass(fp16_repository):
    """ONNX Runtime 1.28's CPU NCHWc pass (graph level "all") crashes on an FP16 Transpose: the
    onnxruntime models of a gpu repository run at level 1 ("extended")."""
    import subprocess
    import sys

    from vidcls.export.repository import load_configs

    configs = load_configs(fp16_repository)
    ort_models = [c for c in configs.values() if c.platform == "onnxruntime_onnx"]
    assert ort_models and all(c.optimization.graph.level == 1 for c in ort_models)
    # What level 1 avoids (a separate process: the crash is a segmentation fault). If a newer
    # ONNX Runtime stops crashing, this assertion says the workaround can go.
    code = ("import onnxruntime as ort, sys; o = ort.SessionOptions(); "
            "o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL; "
            "ort.InferenceSession(sys.argv[1], o, providers=['CPUExecutionProvider'])")
    graph = fp16_repository / "temporal_0" / "1" / "model.onnx"
    crashed = subprocess.run([sys.executable, "-c", code, str(graph)], capture_output=True, timeout=120).returncode
    extended = subprocess.run([sys.executable, "-c", code.replace("ORT_ENABLE_ALL", "ORT_ENABLE_EXTENDED"), str(graph)],
                              capture_output=True, timeout=120).returncode
    assert extended == 0 and crashed != 0


def test_fp32_export_stays_fp32(tiny_checkpoints, tmp_path):
    from vidcls.export.repository import build_repository

    repo = build_repository(tiny_checkpoints, tmp_path / "repo", target="gpu", decode="cpu", precision="fp32")
    config = VidclsConfig.load(repo / "vidcls_config.json")
    assert (config.serving.backbone_precision, config.serving.temporal_precision) == ("fp32", "fp32")
    record = json.loads((repo / PRECISION_RECORD_FILE).read_text())
    assert all("FLOAT16" not in r["ops"] and "FLOAT16" not in r["weight_bytes"] for r in record.values())


def test_fp16_check_catches_a_graph_that_drifts(tiny_checkpoints, fp16_repository, tmp_path):
    """The export's check is live: another model's FP16 graph against this one's FP32 graph fails."""
    import torch

    from vidcls.export.onnx_export import export_temporal_onnx
    from vidcls.models.temporal import SuperEnhancedTemporalModel

    config = VidclsConfig.load(fp16_repository / "vidcls_config.json")
    torch.manual_seed(1234)
    other = export_temporal_onnx(SuperEnhancedTemporalModel(config.temporal).eval(), config, tmp_path / "other.onnx",
                                 check=False)
    report = fp16.check_fp16(fp16_repository / "temporal_0" / "1" / "model.onnx", other, config, "temporal")
    assert not report.ok and report.worst > GPU_SERVED_PROBS_ATOL


def test_a_failed_fp16_check_stops_the_export_with_one_line(tiny_checkpoints, tmp_path, monkeypatch, capsys):
    """What the user sees when the check fails (here: the real failing report of the test above,
    a drifting graph, handed to the export): one line, exit 1, no graph written."""
    import torch

    from vidcls.cli import main
    from vidcls.export.onnx_export import export_temporal_onnx
    from vidcls.models.temporal import SuperEnhancedTemporalModel

    config = VidclsConfig.tiny()
    torch.manual_seed(1234)
    other = export_temporal_onnx(SuperEnhancedTemporalModel(config.temporal).eval(), config, tmp_path / "other.onnx",
                                 check=False)
    real_check = fp16.check_fp16

    def drifting(path, fp32_path, cfg, role, **kw):
        return real_check(path, other if role == "temporal" else fp32_path, cfg, role, **kw)

    monkeypatch.setattr(fp16, "check_fp16", drifting)
    code = main(["export", str(tiny_checkpoints), str(tmp_path / "repo"), "--target", "gpu", "--decode", "cpu"])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # the export's progress lines come first
    assert code == 1 and last.startswith("error: the temporal graph cannot be served in FP16"), err
    assert "--precision fp32" in last and "Traceback" not in err
    assert not (tmp_path / "repo" / "temporal_0" / "1" / "model.onnx").exists()


def _clips(root):
    from tests.fixtures.videos import moving_frames
    from vidcls.video import encode_video

    clips = []
    for i, (codec, ext, size) in enumerate([("libx264", "mp4", (96, 64)), ("libvpx-vp9", "webm", (80, 60)),
                                            ("mpeg4", "avi", (64, 48)), ("libx265", "mkv", (96, 72))] * 3):
        frames = moving_frames(20 + 7 * i, *size, seed=i)
        if i % 3 == 1:  # slides / held pictures: long stretches of one picture
            frames = [frames[(k // 8) * 8] for k in range(len(frames))]
        clips.append(encode_video(root / f"clip_{i}.{ext}", frames, codec=codec))
    return clips


def _served_probabilities(repo, config, path):
    """The gpu pipeline on ``path`` with the repository's FP16 graphs emulated: decode (the PyAV
    reference decoder, as the --decode cpu repository serves), backbone, views, temporal models,
    average."""
    from vidcls.sampling import multiscale, tta_views
    from vidcls.video import load_frames

    sessions = _served_probabilities.cache.setdefault(repo, {
        name: fp16.emulation_session(p, threads=2) for name, p in _graphs(repo, config).items()})
    s = config.serving
    frames, _ = load_frames(path, config)
    (features,) = sessions[s.backbone].run(None, {s.frames: frames[None]})
    views = tta_views(multiscale(features, config.scales), config.tta_views)
    per_model = [np.mean([sessions[m].run([s.probs], {s.sequence: v.astype(np.float32)})[0][0]
                          for v in views.values()], axis=0) for m in config.temporal_model_names()]
    return np.mean(per_model, axis=0)


_served_probabilities.cache = {}


def test_fp16_pipeline_stays_within_the_gpu_tolerance_on_generated_and_real_clips(
        fp16_repository, reference_pipeline, real_world_folder, tmp_path):
    config = VidclsConfig.load(fp16_repository / "vidcls_config.json")
    _, real = real_world_folder
    videos = _clips(tmp_path) + [f.path for f in real]
    diffs, same = [], 0
    for path in videos:
        got = _served_probabilities(fp16_repository, config, path)
        want = np.asarray(reference_pipeline.classify(path)).reshape(-1)
        diffs.append(float(np.abs(got - want).max()))
        same += int(got.argmax() == want.argmax())
    print(f"FP16 (emulated) vs PyTorch FP32 on {len(videos)} clips: max |dp| {max(diffs):.3g}, "
          f"median {np.median(diffs):.3g}; same class {same}/{len(videos)}")
    assert len(videos) >= 30
    assert max(diffs) <= GPU_SERVED_PROBS_ATOL
    assert same / len(videos) >= GPU_SAME_CLASS_MIN


@pytest.mark.slow
def test_production_size_temporal_model_in_fp16(tmp_path):
    """The 65M-parameter temporal model (random init) at the served lengths: FP16 (emulated) vs FP32.
    Measured 2026-12-02: worst 5.9e-4 over lengths 5..128, batch 1 and 3 (tolerance 1e-2)."""
    import torch

    from vidcls.export.onnx_export import export_temporal_onnx
    from vidcls.models.temporal import SuperEnhancedTemporalModel

    config = VidclsConfig()
    torch.manual_seed(42)
    fp32 = export_temporal_onnx(SuperEnhancedTemporalModel(config.temporal).eval(), config, tmp_path / "t.onnx",
                                check=False)
    half = fp16.write_fp16(fp32, tmp_path / "t16.onnx", config, "temporal", check=False)
    report = fp16.check_fp16(half, fp32, config, "temporal", lengths=sorted(set(config.view_lengths.values())),
                             batches=(1,))
    print(report)
    assert report.ok
    weights = fp16.precision_summary(__import__("onnx").load(str(half)))["weight_bytes"]
    # The LSTMs (52M of the 65M parameters) stay FP32 (config.serving.fp16_fp32_ops), the rest is FP16.
    assert weights["FLOAT16"] > 0.1 * (weights["FLOAT16"] + weights["FLOAT"])
