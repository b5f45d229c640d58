"""TensorRT for the gpu target: engines (``model.plan``) and the ONNX Runtime TensorRT/CUDA
execution-provider settings for Triton's onnxruntime backend.

TensorRT 11 (the serving image's) builds strongly typed networks only: an engine computes in the
types its ONNX graph declares, so precision is decided by the graph the export writes
(:mod:`vidcls.export.fp16`: mixed-precision FP16 graphs for the gpu target), never by a builder
flag or an execution-provider option (``trt_fp16_enable`` and ``trt_layer_norm_fp32_fallback``
do nothing there; vidcls.export.backend_contract refuses them).

Everything here is GPU-only at run time; ``tensorrt`` (``pip install vidcls[gpu]``) is imported
lazily so the module imports, and its pure functions (shapes, accelerator settings) work, on CPU.

Optimization profiles come from the config object, one profile per engine (Triton's
tensorrt_plan backend uses profile 0 unless the config names others):

- backbone, frames graph ``[N, S, S, 3]``: N from 1 to ``serving.backbone_batch * num_frames``
  (the most frames one execution of the backbone model can receive);
- backbone, video graph ``[B, K, S, S, 3]`` (what Triton's own backends get, see
  ``vidcls.export.repository.add_video_axis``): B from 1 to ``serving.backbone_batch``, K (the
  video's distinct pictures, ``serving.dedup_frames``) from 1 to T;
- temporal ``[B, L, D]``: B from 1 to ``serving.temporal_batch``, L from the shortest to the
  longest TTA view (36..109 for the defaults), so every view length runs on the same engine.

The opt point is the largest batch: under load Triton's dynamic batcher fills batches, and that
is where throughput is decided; the temporal opt length is the multi-scale length (73), the
length of two of the four views.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from vidcls.config import VidclsConfig
from vidcls.export import parity
from vidcls.export.parity import TRT_FEATURES_RTOL, TRT_PROBS_ATOL

log = logging.getLogger(__name__)

# The GPU tolerances (FP16 engines and graphs vs FP32) live in vidcls.export.parity with the others.
ROLES = ("backbone", "temporal")


class TensorRTUnavailable(RuntimeError):
    """The TensorRT Python package (or a GPU) is missing."""


@dataclass(frozen=True)
class Profile:
    """min/opt/max shape of one dynamic input."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def profiles(config: VidclsConfig, role: str, rank: int | None = None) -> list[Profile]:
    """The optimization profile(s) of ``role`` ('backbone' or 'temporal') for a graph whose input has
    ``rank`` dims (backbone: 4 = frames graph, 5 = video graph; default 5, what Triton serves)."""
    s = config.serving
    if role == "backbone":
        size = config.frame_size
        if (rank or 5) == 4:
            most = s.backbone_batch * config.num_frames
            return [Profile(s.frames, (1, size, size, 3), (most, size, size, 3), (most, size, size, 3))]
        if rank not in (None, 5):
            raise ValueError(f"backbone input rank must be 4 or 5, got {rank}")
        t = config.num_frames
        return [Profile(s.frames, (1, 1, size, size, 3), (s.backbone_batch, t, size, size, 3),
                        (s.backbone_batch, t, size, size, 3))]
    if role == "temporal":
        lengths = sorted(set(config.view_lengths.values()))
        d = config.feature_dim
        return [Profile(s.sequence, (1, lengths[0], d), (s.temporal_batch, config.seq_len, d),
                        (s.temporal_batch, lengths[-1], d))]
    raise ValueError(f"role must be one of {ROLES}, got {role!r}")


def _shape_list(profs: Iterable[Profile], which: str) -> str:
    return ",".join(f"{p.name}:" + "x".join(str(v) for v in getattr(p, which)) for p in profs)


def ort_gpu_accelerators(config: VidclsConfig, role: str, rank: int | None = None,
                         cache_path: str | None = None) -> list[tuple[str, dict[str, str]]]:
    """Triton onnxruntime backend ``gpu_execution_accelerator`` entries: [(name, {key: value})].

    The config generator writes them as ``optimization { execution_accelerators {
    gpu_execution_accelerator: [{ name: ... parameters { key: ... value: ... } }] } }``. Values are
    strings, as Triton wants them. The TensorRT EP gets the config's workspace, the same profile as
    the native engine (so one engine covers every batch size and view length instead of one
    rebuild per new shape), and an engine cache so a restart doesn't rebuild.
    Nodes TensorRT does not take run on the CUDA EP, which Triton adds itself for KIND_GPU.

    The engine and timing caches go to ``cache_path`` (default ``config.serving.trt_cache_dir``):
    a writable volume that outlives the container, not the read-only model repository, so a restart
    loads the engines instead of rebuilding them inside the startup probe's window. No precision
    keys: the engine computes in the graph's own types (module docstring).
    """
    profs = profiles(config, role, rank)
    cache_path = cache_path if cache_path is not None else config.serving.trt_cache_dir
    trt = {
        "max_workspace_size_bytes": str(int(config.serving.trt_workspace_bytes)),
        "trt_profile_min_shapes": _shape_list(profs, "min"),
        "trt_profile_opt_shapes": _shape_list(profs, "opt"),
        "trt_profile_max_shapes": _shape_list(profs, "max"),
        "trt_engine_cache_enable": "1",
        "trt_timing_cache_enable": "1",
    }
    if cache_path:
        trt["trt_engine_cache_path"] = cache_path
        trt["trt_timing_cache_path"] = cache_path
    return [("tensorrt", trt)]


def ort_session_providers(config: VidclsConfig, role: str, rank: int | None = None,
                          cache_dir: str | os.PathLike | None = None) -> list[tuple[str, dict]]:
    """Providers for ``vidcls.ort.make_session`` on a GPU (python backend or benchmarks): TensorRT EP
    with the config's workspace and the same profile as the native engine, then CUDA."""
    from vidcls.ort import cuda_provider_options, tensorrt_provider_options

    profs = profiles(config, role, rank)
    trt = tensorrt_provider_options(config, cache_dir=cache_dir)
    trt.update(trt_profile_min_shapes=_shape_list(profs, "min"), trt_profile_opt_shapes=_shape_list(profs, "opt"),
               trt_profile_max_shapes=_shape_list(profs, "max"))
    return [("TensorrtExecutionProvider", trt), ("CUDAExecutionProvider", cuda_provider_options())]


def ort_cuda_accelerator() -> list[tuple[str, dict[str, str]]]:
    """The plain CUDA EP path (no TensorRT). No ``cudnn_conv_algo_search``: the temporal models have
    no convolutions, and for the backbone ONNX Runtime's default is already EXHAUSTIVE (inside this
    block the value would have to be the option's name, and the onnxruntime backend's deprecated
    top-level parameter of the same name overrode it anyway). Every key here is checked against
    the pinned backend by vidcls.export.backend_contract."""
    return [("cuda", {"use_ep_level_unified_stream": "1"})]


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailable(
            "TensorRT is not installed: `pip install vidcls[gpu]` (tensorrt>=10) on a machine with an "
            "NVIDIA GPU, or export the gpu target with the onnxruntime backend instead of tensorrt_plan"
        ) from exc
    return trt


def build_engine(onnx_path: str | os.PathLike, plan_path: str | os.PathLike, config: VidclsConfig,
                 role: str, check: bool = True) -> Path:
    """Build a serialized TensorRT engine (``model.plan``) from an exported ONNX graph.

    The engine computes in the graph's own types (TensorRT 11 networks are strongly typed: the
    gpu export's mixed-precision FP16 graph gives an FP16 engine, an FP32 graph an FP32 one);
    workspace ``config.serving.trt_workspace_bytes``, the profile of :func:`profiles`. With
    ``check``, the engine is compared with the graph run on the CPU (FP16 graphs through
    vidcls.export.fp16's emulation) on the same inputs and a
    :class:`~vidcls.export.parity.ParityError` is raised beyond ``TRT_*`` tolerances.
    """
    trt = _import_tensorrt()
    import onnx

    from vidcls import serving_image
    from vidcls.export.backend_contract import check_tensorrt_graph

    # A plan loads only in the TensorRT that built it: one built by any other version than the
    # serving image's would fail to load there (or, with a wheel installed only conditionally,
    # come from no TensorRT at all). Build inside docker/Dockerfile.train.
    if trt.__version__ != serving_image.TENSORRT_VERSION:
        raise TensorRTUnavailable(
            f"TensorRT {trt.__version__} is installed, the serving image ({serving_image.TRITON_IMAGE}) runs "
            f"{serving_image.TENSORRT_VERSION}: a plan only loads in the TensorRT that built it. Build the plans "
            "inside docker/Dockerfile.train (same release), or export with --backend onnxruntime")
    problems = check_tensorrt_graph(onnx_path)
    if problems:
        raise RuntimeError(f"TensorRT {trt.__version__}'s ONNX parser would refuse {onnx_path}:\n  " + "\n  ".join(problems))

    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    rank = len(onnx.load(str(onnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim)
    log.info("building a TensorRT engine from %s (%s)", onnx_path, role)
    # TensorRT's own log follows ours: its INFO lines with --verbose (DEBUG), else warnings only.
    logger = trt.Logger(trt.Logger.INFO if log.isEnabledFor(logging.DEBUG) else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 11: explicit batch and strong typing are the only modes
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}:\n{errors}")
    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(config.serving.trt_workspace_bytes))
    profile = builder.create_optimization_profile()
    for p in profiles(config, role, rank):
        profile.set_shape(p.name, p.min, p.opt, p.max)
    builder_config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, builder_config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    return parity.write_checked(
        plan_path, lambda tmp: tmp.write_bytes(bytes(serialized)),
        (lambda tmp: check_engine(tmp, onnx_path, config, role)) if check else None)


class EngineRunner:
    """Runs a serialized single-input engine on torch CUDA tensors (export-time checks and
    benchmarks; Triton runs the plans in production). Calling it returns the first output; every
    output gets a buffer (TensorRT needs an address for each), :meth:`run_all` returns them all
    (the temporal plans also output the attention-pooling weights)."""

    def __init__(self, plan_path: str | os.PathLike):
        trt = _import_tensorrt()
        import torch

        if not torch.cuda.is_available():
            raise TensorRTUnavailable("no CUDA device visible: TensorRT engines need an NVIDIA GPU")
        self._torch = torch
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"cannot deserialize TensorRT engine {plan_path}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.output = self.outputs[0]
        self._dtypes = {n: _torch_dtype(torch, self.engine.get_tensor_dtype(n), trt) for n in names}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.run_all(x)[self.output]

    def run_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        inp = torch.from_numpy(np.ascontiguousarray(x)).to("cuda", self._dtypes[self.input])
        self.context.set_input_shape(self.input, tuple(inp.shape))
        self.context.set_tensor_address(self.input, inp.data_ptr())
        outs = {}
        for name in self.outputs:
            outs[name] = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=self._dtypes[name], device="cuda")
            self.context.set_tensor_address(name, outs[name].data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return {name: out.float().cpu().numpy() for name, out in outs.items()}


def _torch_dtype(torch, dtype, trt):
    return {trt.float32: torch.float32, trt.float16: torch.float16, trt.uint8: torch.uint8,
            trt.int32: torch.int32, trt.int64: torch.int64}[dtype]


def check_engine(plan_path, onnx_path, config: VidclsConfig, role: str, seed: int = 0):
    """Engine vs the graph on the CPU at the profile's extremes and every served length → ParityReport.

    The CPU side runs vidcls.export.fp16's emulation of the graph: an FP16 graph as the GPU rounds
    it (ONNX Runtime's CPU provider lacks FP16 kernels for most ops), an FP32 graph unchanged."""
    from vidcls.export.fp16 import emulation_session

    import onnx

    rank = len(onnx.load(str(onnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim)
    runner = EngineRunner(plan_path)
    session = emulation_session(onnx_path)
    (prof,) = profiles(config, role, rank)
    rng = np.random.default_rng(seed)
    if role == "temporal":
        batches = sorted({1, 3 if prof.max[0] >= 3 else 1, prof.max[0]})
        lengths = sorted(set(config.view_lengths.values()))
        shapes = [(b, n, config.feature_dim) for n in lengths for b in batches]
        tolerance, scale = TRT_PROBS_ATOL, (lambda ref: 1.0)

        def make_input(shape):
            return np.abs(rng.standard_normal(shape)).astype(np.float32)
    else:
        shapes = [(1, *prof.max[1:]), prof.max]
        tolerance, scale = TRT_FEATURES_RTOL, (lambda ref: max(float(np.max(np.abs(ref))), 1e-12))

        def make_input(shape):
            return rng.integers(0, 256, size=shape, dtype=np.uint8)

    # Every output: the temporal plans' attention-pooling weights are softmax outputs like PROBS.
    names = tuple(runner.outputs)

    def reference(x):
        return session.run(list(names), {prof.name: x})

    class _EngineSession:  # parity._compare runs "session.run"
        @staticmethod
        def run(outputs, feeds):
            results = runner.run_all(feeds[prof.name])
            return [results[n] for n in outputs]

    return parity._compare(f"tensorrt {role} ({plan_path})", "engine vs the graph on the CPU", tolerance,
                           shapes, make_input, reference, _EngineSession(), prof.name, scale, output_names=names)
