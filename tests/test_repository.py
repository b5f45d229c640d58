"""Model repository generation: configs parse as Triton's protobuf, the ensemble wiring holds, the
checked-in model_repository/ is exactly what the generator writes, and every target is complete."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vidcls.config import VidclsConfig
from vidcls.export.repository import KEEP_FILE, build_repository, load_configs, validate_repository
from vidcls.export.wiring import WiringError, check_wiring

KIND_GPU, KIND_CPU = 1, 2  # model_config_pb2.ModelInstanceGroup.Kind

ROOT = Path(__file__).resolve().parent.parent
CHECKED_IN = ROOT / "model_repository"
WEIGHT_SUFFIXES = {".onnx", ".plan"}  # written into model_repository/ by a real export, never committed


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in WEIGHT_SUFFIXES}


def test_checked_in_model_repository_equals_regenerated(tmp_path):
    fresh = build_repository(None, tmp_path / "repo", target="gpu", configs_only=True)
    want, have = _files(fresh), _files(CHECKED_IN)
    if (CHECKED_IN / "backbone" / "1" / "model.onnx").exists():  # a local real export removed the markers
        have.update({k: v for k, v in want.items() if k.endswith(KEEP_FILE)})
    assert sorted(have) == sorted(want), "run `make configs` and commit model_repository/"
    stale = [name for name in want if have[name] != want[name]]
    assert not stale, f"model_repository/ differs from the generator in {stale}: run `make configs`"


@pytest.mark.parametrize("decode,backend", [("dali", "onnxruntime"), ("cpu", "onnxruntime"),
                                            ("dali", "tensorrt"), ("cpu", "tensorrt")])
def test_gpu_configs_parse_and_wire(tmp_path, decode, backend):
    config = VidclsConfig()
    repo = build_repository(None, tmp_path / "repo", target="gpu", decode=decode, backend=backend,
                            configs_only=True)
    configs = validate_repository(repo, require_weights=False)
    s = config.serving
    assert set(configs) == {s.ensemble, s.pipeline, s.probe, s.decode, s.backbone, s.views, s.average,
                            *config.temporal_model_names()}
    platforms = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}
    # The temporal (BiLSTM) models take their own backend (default: ORT with the CUDA EP).
    assert configs[s.backbone].platform == platforms[backend]
    for name in [s.backbone, *config.temporal_model_names()]:
        if name != s.backbone:
            assert configs[name].platform == platforms[s.gpu_temporal_backend]
        assert [g.kind for g in configs[name].instance_group] == [KIND_GPU]
        assert configs[name].model_warmup, "the networks warm up at their served shapes"
    assert configs[s.decode].backend == ("dali" if decode == "dali" else "python")
    if decode == "dali":
        # autoserialization: the DALI backend serializes dali.py itself at load time
        assert "@autoserialize" in (repo / s.decode / "1" / "dali.py").read_text()
        assert not (repo / s.decode / "1" / "model.dali").exists()
    for name in (s.ensemble, s.probe, s.views, s.average):
        assert [g.kind for g in configs[name].instance_group] == [KIND_CPU]
        assert configs[name].instance_group[0].count >= 2
    _common_checks(configs, config)


def _common_checks(configs, config):
    s = config.serving
    for name, cfg in configs.items():
        assert cfg.max_batch_size > 0, name
        if name != s.pipeline:
            assert cfg.HasField("dynamic_batching"), name
    video_inputs = [i for n in (s.probe, s.decode) for i in configs[n].input if i.name == s.video]
    assert video_inputs and all(i.allow_ragged_batch for i in video_inputs)
    ens = configs[s.pipeline]
    for front in (ens, configs[s.ensemble]):  # what clients call answers with the labels too
        assert [o.label_filename for o in front.output if o.name == s.probabilities] == ["labels.txt"]
    assert configs[s.ensemble].backend == "python" and configs[s.ensemble].max_batch_size == ens.max_batch_size
    assert len(ens.ensemble_scheduling.step) == 4 + config.num_models * len(config.tta_views) + 1


def test_cpu_repository_is_complete(cpu_repository, serving_config):
    configs = validate_repository(cpu_repository)
    _common_checks(configs, serving_config)
    s = serving_config.serving
    for name, cfg in configs.items():
        assert cfg.platform == "ensemble" or cfg.backend == "python", name
        # the backbone: its own instance count (cores split among instances); others 1
        count = (s.cpu_backbone_instances or s.cpu_instances) if name == s.backbone else s.cpu_instances
        assert all(g.kind == KIND_CPU and g.count == count for g in cfg.instance_group), name
    for name in [s.backbone, *serving_config.temporal_model_names()]:
        assert (cpu_repository / name / "1" / "model.onnx").stat().st_size > 0
    assert not list(cpu_repository.rglob(KEEP_FILE))
    assert VidclsConfig.load(cpu_repository / "vidcls_config.json") == serving_config
    for name in (s.ensemble, s.pipeline):
        assert (cpu_repository / name / "labels.txt").read_text().splitlines() == list(serving_config.classes)
    for cfg_path in cpu_repository.glob("*/config.pbtxt"):
        assert cfg_path.read_text().startswith("# Generated by `vidcls export --target cpu`")


def test_shims_import_the_serving_classes(cpu_repository):
    import vidcls.triton_models.average
    import vidcls.triton_models.cache
    import vidcls.triton_models.decode
    import vidcls.triton_models.onnx_models
    import vidcls.triton_models.probe
    import vidcls.triton_models.views

    classes = {c for m in (vidcls.triton_models.average, vidcls.triton_models.cache, vidcls.triton_models.decode,
                           vidcls.triton_models.onnx_models, vidcls.triton_models.probe, vidcls.triton_models.views)
               for c in vars(m).values()
               if isinstance(c, type) and c.__module__ == m.__name__}
    shims = sorted(cpu_repository.glob("*/1/model.py"))
    assert len(shims) == 6 + 2
    for shim in shims:
        assert len(shim.read_text().splitlines()) <= 4, "shims hold no code"
        assert runpy.run_path(str(shim))["TritonPythonModel"] in classes


def test_serving_models_are_torch_free():
    code = ("import sys, vidcls.triton_models.probe, vidcls.triton_models.decode, vidcls.triton_models.onnx_models, "
            "vidcls.triton_models.views, vidcls.triton_models.average, vidcls.triton_models.cache; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_wiring_check_catches_mistakes(cpu_repository, serving_config):
    s = serving_config.serving
    check_wiring(load_configs(cpu_repository))

    configs = load_configs(cpu_repository)  # a step consuming a tensor nobody produces
    configs[s.pipeline].ensemble_scheduling.step[2].input_map[s.frames] = "FRAMEZ"
    with pytest.raises(WiringError, match="never produced"):
        check_wiring(configs)

    configs = load_configs(cpu_repository)  # a model whose input dims disagree with its producer
    del configs[s.backbone].input[0].dims[:]
    configs[s.backbone].input[0].dims.extend([serving_config.num_frames, 32, 32, 3])
    with pytest.raises(WiringError, match="input FRAMES wants"):
        check_wiring(configs)

    configs = load_configs(cpu_repository)  # a dtype mismatch on a temporal model's output
    configs[serving_config.temporal_model_names()[0]].output[0].data_type = 12  # TYPE_FP64
    with pytest.raises(WiringError, match="PROBS"):
        check_wiring(configs)

    configs = load_configs(cpu_repository)  # a step that produces what another step already did
    step = configs[s.pipeline].ensemble_scheduling.step.add()
    step.CopyFrom(configs[s.pipeline].ensemble_scheduling.step[0])
    with pytest.raises(WiringError, match="already produced"):
        check_wiring(configs)

    configs = load_configs(cpu_repository)  # an intermediate that is also an ensemble output
    out = configs[s.pipeline].output.add()
    out.CopyFrom(configs[s.probe].output[0])  # FRAME_INDICES, which the decode step consumes
    with pytest.raises(WiringError, match="also an input of step"):
        check_wiring(configs)


def test_gpu_repository_with_weights(tmp_path, tiny_checkpoints, cpu_repository, serving_config):
    """gpu/onnxruntime: the backbone graph takes Triton's batch axis [B, T, S, S, 3] and equals the
    frames graph the cpu target runs (in FP32; tests/test_fp16.py checks the FP16 graphs);
    temporal graphs and the DALI pipeline are in place."""
    from vidcls.ort import make_session

    repo = build_repository(tiny_checkpoints, tmp_path / "gpu", target="gpu", decode="dali",
                            backend="onnxruntime", precision="fp32")
    validate_repository(repo)
    s, t, size = serving_config.serving, serving_config.num_frames, serving_config.frame_size
    frames = np.random.default_rng(0).integers(0, 256, (2, t, size, size, 3), dtype=np.uint8)
    video = make_session(repo / s.backbone / "1" / "model.onnx")
    flat = make_session(cpu_repository / s.backbone / "1" / "model.onnx")
    got = video.run(None, {video.get_inputs()[0].name: frames})[0]
    want = flat.run(None, {flat.get_inputs()[0].name: frames.reshape(-1, size, size, 3)})[0]
    assert got.shape == (2, t, serving_config.feature_dim)
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-5, atol=1e-5)
    for name in serving_config.temporal_model_names():
        assert (repo / name / "1" / "model.onnx").exists()
    assert (repo / s.decode / "1" / "dali.py").exists()


def test_tensorrt_export_needs_tensorrt(tmp_path, tiny_checkpoints):
    pytest.importorskip("onnx")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed: covered by the gpu test")
    except ImportError:
        pass
    from vidcls.export.tensorrt import TensorRTUnavailable

    with pytest.raises(TensorRTUnavailable):
        build_repository(tiny_checkpoints, tmp_path / "trt", target="gpu", backend="tensorrt")


@pytest.mark.gpu
def test_tensorrt_repository_on_gpu(tmp_path, tiny_checkpoints):
    repo = build_repository(tiny_checkpoints, tmp_path / "trt", target="gpu", backend="tensorrt")
    configs = validate_repository(repo)
    assert all((repo / n / "1" / "model.plan").exists() for n, c in configs.items()
               if c.platform == "tensorrt_plan")


def test_cli_configs_only(tmp_path):
    from vidcls.cli import main

    assert main(["export", "--configs-only", str(tmp_path / "r"), "--target", "cpu", "--preset", "tiny"]) == 0
    configs = validate_repository(tmp_path / "r", require_weights=False)
    assert configs[VidclsConfig.tiny().serving.backbone].backend == "python"
    assert main(["export", "--configs-only", str(tmp_path / "a"), str(tmp_path / "b")]) == 2


def test_gpu_temporal_backend_choice(tmp_path):
    """TensorRT plans or ONNX Runtime (CUDA EP, or ORT's TensorRT EP) for the BiLSTM models."""
    import dataclasses

    config = VidclsConfig()
    s = config.serving
    repo = build_repository(None, tmp_path / "trt", target="gpu", backend="tensorrt",
                            temporal_backend="tensorrt", configs_only=True)
    configs = validate_repository(repo, require_weights=False)
    assert {configs[n].platform for n in config.temporal_model_names()} == {"tensorrt_plan"}
    repo = build_repository(None, tmp_path / "cuda", target="gpu", backend="tensorrt", configs_only=True)
    configs = validate_repository(repo, require_weights=False)
    assert configs[s.backbone].platform == "tensorrt_plan"
    temporal = configs[config.temporal_model_names()[0]]
    assert temporal.platform == "onnxruntime_onnx"
    assert [a.name for a in temporal.optimization.execution_accelerators.gpu_execution_accelerator] == ["cuda"]
    ort_trt = config.replace(serving=dataclasses.replace(s, gpu_temporal_accelerator="tensorrt"))
    repo = build_repository(None, tmp_path / "ort_trt", target="gpu", configs_only=True, config=ort_trt)
    configs = validate_repository(repo, require_weights=False)
    accel = configs[config.temporal_model_names()[0]].optimization.execution_accelerators
    assert [a.name for a in accel.gpu_execution_accelerator] == ["tensorrt"]
    with pytest.raises(ValueError, match="temporal_backend"):
        build_repository(None, tmp_path / "bad", target="gpu", temporal_backend="tflite", configs_only=True)



def test_export_reports_progress_through_the_program(tiny_checkpoints, serving_config, tmp_path, capsys):
    """One line per step on stderr (each written graph, its parity check and time); the result on
    stdout; with --verbose each check's rows too."""
    from vidcls.cli import main

    graphs = 1 + serving_config.num_models  # the backbone and each temporal model
    for verbose in (False, True):
        repo = tmp_path / f"verbose_{verbose}"
        assert main(["export", str(tiny_checkpoints), str(repo), "--target", "cpu"]
                    + ["--verbose"] * verbose) == 0
        out, err = capsys.readouterr()
        assert out.strip() == f"wrote cpu repository {repo}"
        lines = err.splitlines()
        assert sum(ln.startswith("parity ") and " -> OK " in ln and ln.endswith(" s]") for ln in lines) == graphs
        assert sum(ln.startswith("writing ") for ln in lines) == graphs
        assert (err.count("max_abs_diff") >= graphs) == verbose  # the rows are detail
