"""The gpu repository against the Triton release it ships on (vidcls/serving_image.py).

- One version table: the Dockerfiles' FROM tags and build arguments, pyproject/constraints and the
  versions installed here all agree with it (so the tests below run the image's DALI and ONNX
  Runtime, not whatever is newest).
- What the image's backends would refuse at load time, checked without a GPU: the generated
  dali.py built and run by the pinned DALI, every accelerator key/value against the pinned
  onnxruntime backend, every node of the exported graphs against the pinned TensorRT parser.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import numpy as np
import pytest

from vidcls import serving_image as si
from vidcls.config import VidclsConfig
from vidcls.export import backend_contract as bc

ROOT = Path(__file__).resolve().parents[1]


def _arg(dockerfile: str, name: str) -> str:
    m = re.search(rf"^ARG {name}=(\S+)$", (ROOT / "docker" / dockerfile).read_text(), re.M)
    assert m, f"{dockerfile}: no ARG {name}="
    return m.group(1)


def test_dockerfiles_use_the_release_and_versions_of_the_table():
    triton = (ROOT / "docker" / "Dockerfile.triton").read_text()
    train = (ROOT / "docker" / "Dockerfile.train").read_text()
    assert re.search(rf"^FROM {re.escape(si.TRITON_IMAGE)} AS serve$", triton, re.M)
    assert re.search(rf"^FROM {re.escape(si.TRAIN_IMAGE)}$", train, re.M)
    assert _arg("Dockerfile.triton", "DALI_VERSION") == si.DALI_VERSION
    assert _arg("Dockerfile.triton", "ONNXRUNTIME_VERSION") == si.ONNXRUNTIME_VERSION
    assert _arg("Dockerfile.triton", "TENSORRT_VERSION") == si.TENSORRT_VERSION
    assert _arg("Dockerfile.train", "ONNXRUNTIME_VERSION") == si.ONNXRUNTIME_VERSION
    # The build-time check compares the image's backends with those arguments.
    for var in ("DALI_VERSION", "ONNXRUNTIME_VERSION", "TENSORRT_VERSION"):
        assert f"${{{var}}}" in triton.split("AS serve", 1)[1]


def test_python_environment_pins_and_runs_the_image_versions():
    pyproject = (ROOT / "pyproject.toml").read_text()
    constraints = (ROOT / "constraints.txt").read_text()
    for package, version in si.PIP_PINS.items():
        assert f"{package}=={version}" in constraints.splitlines(), f"constraints.txt: {package}=={version}"
        assert importlib.metadata.version(package) == version, f"installed {package} is not the image's {version}"
    assert f'"nvidia-dali-cuda120=={si.DALI_VERSION}"' in pyproject
    import nvidia.dali
    import onnxruntime

    assert nvidia.dali.__version__ == si.DALI_VERSION
    assert onnxruntime.__version__ == si.ONNXRUNTIME_VERSION


def test_docs_name_the_release_and_its_components():
    for doc in ("README.md", "docs/deployment.md"):
        text = (ROOT / doc).read_text()
        assert si.TRITON_IMAGE in text, doc
        for component, version in si.versions().items():
            assert version in text, f"{doc}: {component} {version}"


def test_no_other_version_of_the_image_components_is_named_anywhere():
    """A version of DALI, ONNX Runtime or TensorRT written in the docs, the code or the
    Docker/packaging files is the pinned one: a full version must equal it, and for DALI and
    TensorRT no version newer than the pin may be named (older ones are history: "frame selection
    arrived in DALI 1.48"). A stale "DALI 2.4" once outlived the pin."""
    pattern = re.compile(r"(?P<what>DALI|nvidia-dali-cuda1\d+|ONNX Runtime|onnxruntime|TensorRT)[ =]+"
                         r"(?P<version>\d+\.\d+(?:\.\d+){0,2})\b")
    pinned = {"DALI": si.DALI_VERSION, "ONNX Runtime": si.ONNXRUNTIME_VERSION, "TensorRT": si.TENSORRT_VERSION}
    files = [ROOT / "README.md", ROOT / "pyproject.toml", *ROOT.glob("docs/*.md"), *ROOT.glob("docker/*"),
             *ROOT.glob("deploy/**/*.yaml"), *ROOT.glob("vidcls/**/*.py"), *ROOT.glob("export/*.py"),
             *ROOT.glob("training/*.py"), *ROOT.glob("client/*.py"), *ROOT.glob("benchmarks/*.py")]
    stale = []
    for path in files:
        if not path.is_file():
            continue
        for m in pattern.finditer(path.read_text(errors="replace")):
            what = {"onnxruntime": "ONNX Runtime"}.get(m["what"], "DALI" if m["what"].startswith("nvidia-dali") else m["what"])
            got = tuple(int(x) for x in m["version"].split("."))
            want = tuple(int(x) for x in pinned[what].split("."))
            newer = what != "ONNX Runtime" and got[:2] > want[:2]
            if newer or (len(got) >= 3 and got[:2] == want[:2] and got != want[:len(got)]):
                stale.append(f"{path.relative_to(ROOT)}: {m.group(0)}")
    assert stale == []


# ---- the image build's version check, run on fake image trees ------------------------------------
def _fake_image(root, dali="2.2.0", ort="1.28.0", trt="11.2.1.2", trt_lib=None, missing=()):
    """A tree laid out like the Triton image where the check looks (IMAGE_ROOT)."""
    backends = root / "opt" / "tritonserver" / "backends"
    for b in ("dali", "onnxruntime", "tensorrt", "python"):
        if b not in missing:
            (backends / b).mkdir(parents=True, exist_ok=True)
    if dali and "dali" not in missing:
        (backends / "dali" / "wheel" / "dali" / f"nvidia_dali_cuda130-{dali}.dist-info").mkdir(parents=True)
    if ort and "onnxruntime" not in missing:
        (backends / "onnxruntime" / f"libonnxruntime.so.{ort}").write_bytes(b"")
    lib = trt_lib if trt_lib is not None else (trt.rsplit(".", 1)[0] if trt else None)
    if lib:
        (root / "usr" / "lib" / "x86_64-linux-gnu").mkdir(parents=True, exist_ok=True)
        (root / "usr" / "lib" / "x86_64-linux-gnu" / f"libnvinfer.so.{lib}").write_bytes(b"")
    if trt:
        major, minor, patch, build = trt.split(".")
        (root / "usr" / "include").mkdir(parents=True, exist_ok=True)
        (root / "usr" / "include" / "NvInferVersion.h").write_text(
            f"#define TRT_MAJOR_ENTERPRISE {major}\n#define TRT_MINOR_ENTERPRISE {minor}\n"
            f"#define TRT_PATCH_ENTERPRISE {patch}\n#define TRT_BUILD_ENTERPRISE {build}\n")
    return root


@pytest.mark.parametrize("case, kwargs, why", [
    ("as pinned", {}, None),
    ("DALI patch", {"dali": "2.2.1"}, "DALI 2.2.1"),
    ("ORT patch", {"ort": "1.28.1"}, "ONNX Runtime 1.28.1"),
    ("TensorRT build part", {"trt": "11.2.1.3"}, "TensorRT 11.2.1.3"),
    ("TensorRT minor", {"trt": "11.3.0.1"}, "TensorRT 11.3.0.1"),
    ("TensorRT full version unreadable", {"trt": None, "trt_lib": "11.2.1"}, "TensorRT not found"),
    ("TensorRT library of another release", {"trt_lib": "11.2.0"}, "libnvinfer.so.11.2.0"),
    ("no TensorRT at all", {"trt": None, "trt_lib": ""}, "TensorRT not found"),
    ("no DALI wheel", {"dali": None}, "DALI not found"),
    ("no ONNX Runtime library", {"ort": None}, "ONNX Runtime not found"),
    ("no python backend", {"missing": ("python",)}, "backend python missing"),
])
def test_image_version_check_fails_on_anything_but_the_pinned_versions(tmp_path, case, kwargs, why):
    import subprocess

    root = _fake_image(tmp_path / "image", **kwargs)
    res = subprocess.run([str(ROOT / "docker" / "check_image_versions.sh"), si.DALI_VERSION, si.ONNXRUNTIME_VERSION,
                          si.TENSORRT_VERSION], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "IMAGE_ROOT": str(root)})
    if why is None:
        assert res.returncode == 0 and "versions ok" in res.stdout, res.stdout + res.stderr
    else:
        assert res.returncode != 0 and why in res.stderr, (case, res.stdout, res.stderr)


# ---- DALI: the generated dali.py, with the image's DALI -----------------------------------------
@pytest.mark.parametrize("config", [VidclsConfig.tiny(), VidclsConfig()], ids=["tiny", "default"])
def test_repository_dali_py_builds_and_decodes_with_the_pinned_dali(config, tmp_path):
    """What the image's DALI backend does at load time (autoserialize the file), then decode."""
    import importlib.util

    from nvidia.dali._utils.autoserialize import _discover_autoserialize

    from vidcls.export.dali_pipeline import run_pipeline
    from vidcls.export.repository import build_repository
    from vidcls.sampling import sample_indices
    from vidcls.video import encode_video, probe

    from tests.fixtures.videos import moving_frames

    repo = build_repository(None, tmp_path / "repo", target="gpu", decode="dali", configs_only=True, config=config)
    path = repo / config.serving.decode / "1" / "dali.py"
    spec = importlib.util.spec_from_file_location("repo_dali", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (fn,) = _discover_autoserialize(module, visited=[])
    # The serialized form the backend would load (device "gpu" = NVDEC; serializing needs no GPU).
    gpu_pipe = fn(device_id=None)
    assert b"mixed" in gpu_pipe.serialize()
    pipe = fn(device="cpu", device_id=None)
    pipe.build()
    clip = encode_video(tmp_path / "clip.webm", moving_frames(20, 96, 64, 1), codec="libvpx-vp9")
    n = probe(clip).num_frames
    (frames,) = run_pipeline(pipe, config, [clip.read_bytes()], [sample_indices(n, config.num_frames)])
    assert frames.shape == (config.num_frames, config.frame_size, config.frame_size, 3) and frames.dtype == np.uint8
    assert pipe.max_batch_size == config.serving.dali_decode_batch


# ---- onnxruntime backend accelerators ------------------------------------------------------------
def _configs(tmp_path, **kw):
    from vidcls.export.repository import build_repository, load_configs

    return load_configs(build_repository(None, tmp_path / "repo", target="gpu", configs_only=True, **kw))


@pytest.mark.parametrize("accelerators", [("tensorrt", "cuda"), ("cuda", "tensorrt"), ("tensorrt", "tensorrt")])
def test_generated_accelerators_are_what_the_pinned_backend_accepts(tmp_path, accelerators):
    import dataclasses

    base = VidclsConfig()
    config = base.replace(serving=dataclasses.replace(base.serving, gpu_backbone_accelerator=accelerators[0],
                                                      gpu_temporal_accelerator=accelerators[1]))
    configs = _configs(tmp_path, config=config)
    problems = [p for cfg in configs.values() for p in bc.check_accelerators(cfg)]
    assert problems == []
    for cfg in configs.values():
        for acc in cfg.optimization.execution_accelerators.gpu_execution_accelerator:
            if acc.name == "tensorrt":  # engines cached on the writable volume, not the model folder
                assert acc.parameters["trt_engine_cache_path"] == config.serving.trt_cache_dir
                assert acc.parameters["trt_timing_cache_path"] == config.serving.trt_cache_dir


def test_accelerator_check_catches_what_the_backend_would_misread(tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    cfg = text_format.Parse('''name: "m" optimization { execution_accelerators { gpu_execution_accelerator {
        name: "cuda" parameters { key: "cudnn_conv_algo_search" value: "0" } } gpu_execution_accelerator {
        name: "tensorrt" parameters { key: "precision" value: "FP16" } } } }''', model_config_pb2.ModelConfig())
    problems = bc.check_accelerators(cfg)
    assert any("cudnn_conv_algo_search='0'" in p for p in problems)
    assert any("no parameter 'precision'" in p for p in problems)
    # Keys the backend takes and TensorRT 11 ignores (strongly typed networks) are refused too.
    cfg = text_format.Parse('''name: "m" optimization { execution_accelerators { gpu_execution_accelerator {
        name: "tensorrt" parameters { key: "precision_mode" value: "FP16" }
        parameters { key: "trt_layer_norm_fp32_fallback" value: "1" } } } }''', model_config_pb2.ModelConfig())
    problems = bc.check_accelerators(cfg)
    assert len(problems) == 2 and all("does nothing with TensorRT 11" in p for p in problems), problems


# ---- TensorRT parser: node types of the exported graphs ------------------------------------------
@pytest.fixture(scope="module")
def gpu_repository(tiny_checkpoints, tmp_path_factory):
    from vidcls.export.repository import build_repository

    return build_repository(tiny_checkpoints, tmp_path_factory.mktemp("gpu_repo") / "repo", target="gpu")


def test_exported_gpu_graphs_pass_the_pinned_tensorrt_parser_table(gpu_repository):
    config = VidclsConfig.load(gpu_repository / "vidcls_config.json")
    assert bc.check_repository_graphs(gpu_repository) == []
    import onnx

    backbone = onnx.load(str(gpu_repository / config.serving.backbone / "1" / "model.onnx"))
    first = backbone.graph.node[0]
    assert first.op_type == "Cast" and first.input[0] == config.serving.frames  # uint8 only into a Cast


def test_tensorrt_check_catches_uint8_layout_ops_and_unsigned_qdq(tmp_path, serving_config):
    """The two graphs the review found: uint8 reshaped before its cast, and the cpu INT8 QDQ graph."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.UINT8, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [8])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["r"]), helper.make_node("Cast", ["r"], ["c"], to=TensorProto.FLOAT),
         helper.make_node("QuantizeLinear", ["c", "s", "z"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
        "g", [x], [y], [numpy_helper.from_array(np.array([8], np.int64), "shape"),
                        numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                        numpy_helper.from_array(np.array(128, np.uint8), "z")])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    problems = bc.check_tensorrt_graph(path)
    assert any("Reshape" in p and "UINT8" in p for p in problems)
    assert any("QuantizeLinear" in p and "signed INT8" in p for p in problems)
    assert any("DequantizeLinear" in p for p in problems)


def test_probe_of_a_dali_repository_refuses_what_dali_cannot_read(tmp_path, serving_config):
    """Point of the --decode dali repository's probe parameter: MPEG-4 Part 2 passes the input limits
    but not the DALI list; H.264 passes both. The cpu-decode probe takes both."""
    from vidcls.triton_models.probe import ProbeModel
    from vidcls.video import encode_video

    from tests.fixtures.videos import moving_frames

    frames = moving_frames(12, 64, 48, 1)
    mpeg4 = np.frombuffer(encode_video(tmp_path / "a.avi", frames, codec="mpeg4").read_bytes(), np.uint8)[None]
    h264 = np.frombuffer(encode_video(tmp_path / "b.mp4", frames, codec="libx264").read_bytes(), np.uint8)[None]
    for decoder, mpeg4_ok in (("dali", False), ("cpu", True)):
        model = ProbeModel()
        model.config = serving_config
        model.model_config = {"parameters": {"decoder": {"string_value": decoder}}}
        model.setup()
        results = model.process([{serving_config.serving.video: mpeg4}, {serving_config.serving.video: h264}])
        assert isinstance(results[1], dict)
        if mpeg4_ok:
            assert isinstance(results[0], dict)
        else:
            assert getattr(results[0], "code", None) == "dali_unsupported", results[0]
