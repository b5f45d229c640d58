"""ONNX Runtime sessions for the exported backbone and temporal models. torch-free.

The cpu-target python-backend runners, the parity checks and the benchmarks all open their
sessions here, so every caller gets the same settings:

- all graph optimizations on (constant folding, LayerNorm/Gelu/MatMul fusions): the parity checks
  run the optimized graph, i.e. exactly what serving runs;
- sequential execution: our graphs are one chain of ops, and parallel execution only adds
  scheduling overhead and oversubscribes cores that Triton's other model instances share;
- ``intra_op_threads`` (0 = ONNX Runtime's default, one per physical core) and
  ``inter_op_threads`` = 1, so several Triton instances can share a machine without each one
  starting a full pool; :func:`session_threads` is the thread policy per role (the served models
  and the benchmarks that time their sessions alone ask it, so both run the same pool).

Providers are given by short name: ``"cpu"`` (default), ``"cuda"``, ``"tensorrt"`` (TensorRT EP
with the workspace of ``config.serving.trt_workspace_bytes``; TensorRT 11 computes in the graph's
own types, so FP16 comes from the gpu export's FP16 graphs, not from an option), or passed
through as full ONNX Runtime names / ``(name, options)`` pairs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

import numpy as np

from vidcls.config import VidclsConfig

ProviderSpec = Union[str, tuple[str, dict]]

_SHORT_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}


_PRIORITY = {"TensorrtExecutionProvider": 0, "CUDAExecutionProvider": 1, "CPUExecutionProvider": 2}


def cuda_provider_options(device_id: int = 0) -> dict[str, Any]:
    # EXHAUSTIVE conv search is paid once per input shape at start-up and the shapes are fixed per
    # batch size in serving; arena growth by request keeps a shared 10 GB MIG slice usable.
    return {
        "device_id": device_id,
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "arena_extend_strategy": "kSameAsRequested",
        "do_copy_in_default_stream": True,
    }


def tensorrt_provider_options(config: VidclsConfig | None = None, device_id: int = 0,
                              cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """TensorRT EP options: workspace from the config, engine cache so restarts don't rebuild. No
    precision options: with TensorRT 11 (strongly typed) ``trt_fp16_enable`` builds the graph's own
    types anyway; the FP16 graph carries the precision (LayerNorm kept FP32 inside it)."""
    config = config or VidclsConfig()
    options: dict[str, Any] = {
        "device_id": device_id,
        "trt_max_workspace_size": int(config.serving.trt_workspace_bytes),
    }
    if cache_dir is not None:
        options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir),
                       trt_timing_cache_enable=True, trt_timing_cache_path=str(cache_dir))
    return options


def resolve_providers(providers: Iterable[ProviderSpec] | str | None = None,
                      config: VidclsConfig | None = None,
                      cache_dir: str | os.PathLike | None = None) -> list[tuple[str, dict]]:
    """Short names / full names / (name, options) → ONNX Runtime's (name, options) list.

    GPU providers always get the CPU provider appended as the fallback for nodes they do not
    take, and the list is put in TensorRT → CUDA → CPU order whatever order it was given in.
    """
    if providers is None:
        providers = ["cpu"]
    elif isinstance(providers, str):
        providers = [providers]
    resolved: list[tuple[str, dict]] = []
    for spec in providers:
        name, options = (spec, None) if isinstance(spec, str) else (spec[0], dict(spec[1]))
        full = _SHORT_NAMES.get(name.lower(), name)
        if options is None:
            if full == "CUDAExecutionProvider":
                options = cuda_provider_options()
            elif full == "TensorrtExecutionProvider":
                options = tensorrt_provider_options(config, cache_dir=cache_dir)
            else:
                options = {}
        resolved.append((full, options))
    if all(name != "CPUExecutionProvider" for name, _ in resolved):
        resolved.append(("CPUExecutionProvider", {}))
    # ONNX Runtime hands each node to the first provider in the list that takes it: TensorRT must
    # come before CUDA or it never gets a node, CPU last. Order among equals is kept.
    return sorted(resolved, key=lambda item: _PRIORITY.get(item[0], 1))


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # a container's cpuset, not the host's core count
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def session_threads(config: VidclsConfig, role: str, instances: int = 1) -> int:
    """intra-op threads of ``role``'s ('backbone' | 'temporal') session: the per-role setting,
    else ``ort_intra_op_threads``. For the backbone 0 = every usable core (a container's cpuset,
    which ONNX Runtime's own default does not read) and -1 = the usable cores split among its
    ``instances``; otherwise 0 = ONNX Runtime's default (one per physical core)."""
    s = config.serving
    if role == "backbone":
        own = int(s.backbone_threads)
        if own < 0:
            return max(1, usable_cores() // max(1, instances))
        return own or int(s.ort_intra_op_threads) or usable_cores()
    return int(s.temporal_threads or s.ort_intra_op_threads)


def make_session(path: str | os.PathLike, intra_op_threads: int = 0,
                 providers: Sequence[ProviderSpec] | str | None = None, *,
                 config: VidclsConfig | None = None,
                 cache_dir: str | os.PathLike | None = None,
                 spinning: bool = True, log_severity: int | None = None):
    """An ``onnxruntime.InferenceSession`` for ``path`` with the project's settings (module doc).

    Raises a clear error when a requested GPU provider is not in this ONNX Runtime build
    (the ``onnxruntime`` CPU wheel has none; ``onnxruntime-gpu`` has CUDA and TensorRT), instead
    of ONNX Runtime's silent fallback to the CPU. ``spinning=False`` stops idle intra-op threads
    from spin-waiting (for many model instances sharing few cores).
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} not found")
    resolved = resolve_providers(providers, config=config, cache_dir=cache_dir)
    available = set(ort.get_available_providers())
    missing = [name for name, _ in resolved if name not in available]
    if missing:
        raise RuntimeError(f"ONNX Runtime providers {missing} are not available in this build "
                           f"(available: {sorted(available)}); GPU providers need onnxruntime-gpu")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = int(intra_op_threads)
    options.inter_op_num_threads = 1
    if log_severity is not None:  # 0 verbose .. 4 fatal; ORT's default is 2 (warnings)
        options.log_severity_level = int(log_severity)
    if not spinning:
        # With several instances per core set, idle pools that spin-wait for work burn the cores
        # the busy instances need; off trades a little latency for that.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=[name for name, _ in resolved],
                                provider_options=[opts for _, opts in resolved])


def chunked_run(session, input_name: str, data: np.ndarray, chunk: int, outputs: Sequence[str] | None = None):
    """``session`` over ``data`` in chunks of at most ``chunk`` rows along axis 0, concatenated:
    the first output, or with ``outputs`` (names) a list of those outputs."""
    chunk = max(1, int(chunk))
    runs = [session.run(None if outputs is None else list(outputs), {input_name: data[i:i + chunk]})
            for i in range(0, len(data), chunk)]
    joined = [parts[0] if len(parts) == 1 else np.concatenate(parts) for parts in zip(*runs)]
    return joined[0] if outputs is None else joined
