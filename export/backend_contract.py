"""What the pinned serving image's backends accept, as data, and the checks that hold our files to it.

The gpu repository cannot be loaded on the machines that build and test it (no GPU, no Triton
image), so what would fail at load time there is checked here against the backends of the release
in :mod:`vidcls.serving_image`:

- :func:`check_accelerators`: every ``gpu_execution_accelerator`` of a generated onnxruntime
  config. The onnxruntime backend maps the ``tensorrt`` block's keys through a fixed table onto
  TensorRT EP options (unknown keys are rejected at load), and hands the ``cuda`` block's
  key/value pairs unchanged to ONNX Runtime's ``UpdateCUDAProviderOptions``: a value there must be
  what ONNX Runtime parses (``cudnn_conv_algo_search`` takes ``EXHAUSTIVE``/``HEURISTIC``/
  ``DEFAULT``; the numeric ``"0"`` of the old top-level parameter is not one of them).
- keys the pinned TensorRT ignores: TensorRT 11 networks are strongly typed (precision comes
  from the ONNX graph), so ``precision_mode`` (the EP's ``trt_fp16_enable``/``trt_int8_enable``),
  ``trt_layer_norm_fp32_fallback`` and the INT8 calibration-table keys would be accepted by the
  backend and do nothing: they are refused here (:data:`IGNORED_BY_TENSORRT`).
- :func:`check_tensorrt_graph`: every node of an exported ONNX graph is an operator the TensorRT
  ONNX parser imports, for the element types it gets. TensorRT takes UINT8 only at network
  inputs/outputs and in ``Cast``, so a uint8 tensor may feed nothing but a ``Cast``; Q/DQ must be
  symmetric signed INT8 (zero point 0).

The tables were written from the sources of the pinned release: the onnxruntime backend's README
parameter table (TensorRT keys), ONNX Runtime's CUDA EP option parser, and onnx-tensorrt's
``docs/operators.md`` (operators and element types). Moving to another release means reading those
again and updating the tables with :data:`vidcls.serving_image.TRITON_RELEASE`.
"""

from __future__ import annotations

import os
from pathlib import Path

from vidcls import serving_image

# ---- onnxruntime backend: gpu_execution_accelerator ---------------------------------------------
_BOOL = {"0", "1", "true", "false"}


def _int(value: str) -> bool:
    return value.lstrip("-").isdigit()


def _any(value: str) -> bool:
    return True


def _shapes(value: str) -> bool:
    # "name:1x2x3,name2:4x5"
    try:
        return all(part.split(":", 1)[0] and all(d.isdigit() for d in part.split(":", 1)[1].split("x"))
                   for part in value.split(","))
    except IndexError:
        return False


# Triton key → value check, for the "tensorrt" accelerator (the backend's mapping table onto the
# TensorRT EP's trt_* options).
TENSORRT_ACCELERATOR_KEYS = {
    "precision_mode": lambda v: v in {"FP32", "FP16", "INT8"},
    "max_workspace_size_bytes": _int,
    "trt_max_partition_iterations": _int,
    "trt_min_subgraph_size": _int,
    "int8_calibration_table_name": _any,
    "int8_use_native_calibration_table": lambda v: v in _BOOL,
    "trt_dla_enable": lambda v: v in _BOOL,
    "trt_dla_core": _int,
    "trt_engine_cache_enable": lambda v: v in _BOOL,
    "trt_engine_cache_path": _any,
    "trt_engine_cache_prefix": _any,
    "trt_dump_subgraphs": lambda v: v in _BOOL,
    "trt_force_sequential_engine_build": lambda v: v in _BOOL,
    "trt_context_memory_sharing_enable": lambda v: v in _BOOL,
    "trt_layer_norm_fp32_fallback": lambda v: v in _BOOL,
    "trt_timing_cache_enable": lambda v: v in _BOOL,
    "trt_timing_cache_path": _any,
    "trt_force_timing_cache": lambda v: v in _BOOL,
    "trt_detailed_build_log": lambda v: v in _BOOL,
    "trt_build_heuristics_enable": lambda v: v in _BOOL,
    "trt_sparsity_enable": lambda v: v in _BOOL,
    "trt_builder_optimization_level": _int,
    "trt_auxiliary_streams": _int,
    "trt_tactic_sources": _any,
    "trt_extra_plugin_lib_paths": _any,
    "trt_profile_min_shapes": _shapes,
    "trt_profile_opt_shapes": _shapes,
    "trt_profile_max_shapes": _shapes,
    "trt_cuda_graph_enable": lambda v: v in _BOOL,
    "trt_dump_ep_context_model": lambda v: v in _BOOL,
    "trt_ep_context_file_path": _any,
    "trt_ep_context_embed_mode": _int,
}

# ONNX Runtime CUDA EP option → value check (UpdateCUDAProviderOptions parses these names/values).
CUDA_ACCELERATOR_KEYS = {
    "device_id": _int,
    "gpu_mem_limit": _int,
    "arena_extend_strategy": lambda v: v in {"kNextPowerOfTwo", "kSameAsRequested"},
    "cudnn_conv_algo_search": lambda v: v in {"EXHAUSTIVE", "HEURISTIC", "DEFAULT"},
    "do_copy_in_default_stream": lambda v: v in _BOOL,
    "cudnn_conv_use_max_workspace": lambda v: v in _BOOL,
    "cudnn_conv1d_pad_to_nc1d": lambda v: v in _BOOL,
    "enable_cuda_graph": lambda v: v in _BOOL,
    "enable_skip_layer_norm_strict_mode": lambda v: v in _BOOL,
    "use_tf32": lambda v: v in _BOOL,
    "prefer_nhwc": lambda v: v in _BOOL,
    "use_ep_level_unified_stream": lambda v: v in _BOOL,
    "tunable_op_enable": lambda v: v in _BOOL,
    "tunable_op_tuning_enable": lambda v: v in _BOOL,
    "tunable_op_max_tuning_duration_ms": _int,
    "fuse_conv_bias": lambda v: v in _BOOL,
    "sdpa_kernel": _int,
}

ACCELERATORS = {"tensorrt": TENSORRT_ACCELERATOR_KEYS, "cuda": CUDA_ACCELERATOR_KEYS}

# tensorrt accelerator keys the backend accepts and TensorRT 11 ignores (TensorRT 10.x → 11.x
# migration guide: the precision builder flags, weak typing and per-layer precision are gone).
_STRONG_TYPING = "TensorRT 11 builds strongly typed networks: precision comes from the ONNX graph"
IGNORED_BY_TENSORRT = {
    "precision_mode": _STRONG_TYPING + " (export the gpu target with --precision fp16 instead)",
    "trt_layer_norm_fp32_fallback": _STRONG_TYPING + " (the FP16 graph keeps LayerNormalization in FP32)",
    "int8_calibration_table_name": "TensorRT 11 has no INT8 calibration: INT8 needs Q/DQ nodes in the graph",
    "int8_use_native_calibration_table": "TensorRT 11 has no INT8 calibration: INT8 needs Q/DQ nodes in the graph",
}


def check_accelerators(model_config) -> list[str]:
    """Problems with the ``gpu_execution_accelerator`` entries of a parsed ModelConfig (empty: fine)."""
    problems = []
    for acc in model_config.optimization.execution_accelerators.gpu_execution_accelerator:
        keys = ACCELERATORS.get(acc.name)
        if keys is None:
            problems.append(f"{model_config.name}: accelerator {acc.name!r} is not one of {sorted(ACCELERATORS)}")
            continue
        for key, value in acc.parameters.items():
            check = keys.get(key)
            ignored = IGNORED_BY_TENSORRT.get(key) if acc.name == "tensorrt" else None
            if ignored and serving_image.tensorrt_major_minor()[0] >= 11:
                problems.append(f"{model_config.name}: tensorrt accelerator parameter {key} does nothing with "
                                f"TensorRT {serving_image.TENSORRT_VERSION}: {ignored}")
            elif check is None:
                problems.append(f"{model_config.name}: {acc.name} accelerator has no parameter {key!r}")
            elif not check(value):
                problems.append(f"{model_config.name}: {acc.name} accelerator parameter {key}={value!r} is not "
                                "a value the onnxruntime backend accepts")
    return problems


# ---- TensorRT ONNX parser ----------------------------------------------------------------------
# Operator → element types the parser imports it for (onnx-tensorrt docs/operators.md). Only
# operators an exported vidcls graph can contain, plus their usual neighbours; a graph with any
# other operator fails the check and the table must be extended from the parser's documentation.
_F = frozenset({"FLOAT", "FLOAT16", "BFLOAT16"})
_FI = _F | {"INT32", "INT64"}
_ALL = _FI | {"INT8", "BOOL"}
TENSORRT_ONNX_OPS: dict[str, frozenset] = {
    **{op: _FI for op in ("Add", "Sub", "Mul", "Div", "Max", "Min", "Abs", "Neg", "Equal", "Greater", "Less",
                          "Where", "Expand", "Tile", "Range", "Sum", "Mean")},
    **{op: _F for op in ("Relu", "Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Pow", "Erf", "Softmax", "LogSoftmax",
                         "HardSigmoid", "HardSwish", "LeakyRelu", "Elu", "Softplus", "Mish",
                         "Conv", "ConvTranspose", "BatchNormalization", "InstanceNormalization",
                         "LayerNormalization", "MatMul", "Gemm", "LSTM", "GRU", "RNN",
                         "AveragePool", "MaxPool", "GlobalAveragePool", "GlobalMaxPool",
                         "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL2",
                         "Resize", "Clip", "Dropout", "Reciprocal", "Floor", "Ceil", "Round")},
    **{op: _ALL for op in ("Reshape", "Transpose", "Concat", "Split", "Slice", "Squeeze", "Unsqueeze", "Flatten",
                           "Gather", "GatherElements", "Identity", "Shape", "Size", "Constant", "ConstantOfShape",
                           "Pad")},
    # UINT8 is legal only here (and at network inputs/outputs).
    "Cast": _ALL | {"UINT8"},
    # Explicit quantization: symmetric signed INT8 only (zero point 0), checked in check_tensorrt_graph.
    "QuantizeLinear": _F,
    "DequantizeLinear": frozenset({"INT8"}),
}


def check_tensorrt_graph(path: str | os.PathLike) -> list[str]:
    """Problems that would stop TensorRT's ONNX parser (of the pinned release) on the graph at ``path``."""
    import onnx
    from onnx import numpy_helper

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    g = model.graph
    types = {v.name: onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type)
             for v in list(g.input) + list(g.output) + list(g.value_info)}
    inits = {t.name: t for t in g.initializer}
    types.update({name: onnx.TensorProto.DataType.Name(t.data_type) for name, t in inits.items()})
    problems: list[str] = []
    for node in g.node:
        where = f"{node.op_type} node {node.name or node.output[0]!r}"
        allowed = TENSORRT_ONNX_OPS.get(node.op_type)
        if allowed is None:
            problems.append(f"{where}: operator not in TensorRT {serving_image.TENSORRT_VERSION}'s ONNX parser table")
            continue
        data_inputs = [x for x in node.input[:1] if x]
        for x in data_inputs:
            dtype = types.get(x)
            if dtype == "UINT8" and node.op_type != "Cast":
                problems.append(f"{where}: takes UINT8 tensor {x!r}; TensorRT takes UINT8 only in Cast "
                                "(cast the frames to float first)")
            elif dtype and dtype not in allowed and dtype != "UINT8":
                problems.append(f"{where}: element type {dtype} of {x!r} is not imported (allowed: {sorted(allowed)})")
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = node.input[2] if len(node.input) > 2 else ""
            if zp:
                ztype = types.get(zp)
                if ztype != "INT8":
                    problems.append(f"{where}: zero point {zp!r} is {ztype}; TensorRT takes signed INT8 Q/DQ only")
                elif zp in inits and numpy_helper.to_array(inits[zp]).any():
                    problems.append(f"{where}: zero point {zp!r} is not 0 (TensorRT Q/DQ is symmetric)")
    return problems


def check_repository_graphs(repo: str | Path) -> list[str]:
    """:func:`check_tensorrt_graph` over every ONNX graph a gpu repository serves through TensorRT
    (its onnxruntime models with the tensorrt accelerator and the graphs plans are built from)."""
    problems = []
    for path in sorted(Path(repo).glob("*/1/*.onnx")):
        problems += [f"{path.relative_to(repo)}: {p}" for p in check_tensorrt_graph(path)]
    return problems
