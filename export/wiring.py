"""The served pipeline as data: every model's tensors and the ensemble's steps, from one VidclsConfig.

:func:`pipeline` describes what each model takes and gives (names, Triton dtypes, dims without the
batch dimension); :mod:`vidcls.export.pbtxt` renders it to config.pbtxt. :func:`check_wiring` works
on the *parsed* configs (Triton's model_config protobuf), so it checks what Triton will read:
every tensor is produced before it is consumed, each produced once, none left dangling, and the
names, dtypes and dims of every step agree with the config of the model it calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vidcls.config import DECODER_PARAMETER, VidclsConfig

TARGETS = ("gpu", "cpu")
DECODERS = ("dali", "cpu")
BACKENDS = ("onnxruntime", "tensorrt")

# The python-backend implementation of each role (module:class), imported by the generated shims.
PYTHON_IMPL = {
    "probe": "vidcls.triton_models.probe:ProbeModel",
    "decode": "vidcls.triton_models.decode:DecodeModel",
    "backbone": "vidcls.triton_models.onnx_models:BackboneModel",
    "temporal": "vidcls.triton_models.onnx_models:TemporalModel",
    "views": "vidcls.triton_models.views:ViewsModel",
    "average": "vidcls.triton_models.average:AverageModel",
    "cache": "vidcls.triton_models.cache:AnswerCacheModel",
}


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # Triton DataType name, e.g. "TYPE_FP32"
    dims: tuple[int, ...]
    ragged: bool = False
    label_filename: str | None = None


@dataclass(frozen=True)
class Step:
    model: str
    input_map: tuple[tuple[str, str], ...]  # (model input, ensemble tensor)
    output_map: tuple[tuple[str, str], ...]  # (model output, ensemble tensor)


@dataclass(frozen=True)
class Model:
    name: str
    role: str  # probe, decode, backbone, views, temporal, average, ensemble
    kind: str  # python, onnxruntime, tensorrt, dali, ensemble
    max_batch_size: int
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    steps: tuple[Step, ...] = field(default=())
    # Extra string parameters of the model's config.pbtxt (key, value).
    params: tuple[tuple[str, str], ...] = field(default=())

    @property
    def impl(self) -> str | None:
        return PYTHON_IMPL[self.role] if self.kind == "python" else None


LABELS_FILE = "labels.txt"


def pipeline(config: VidclsConfig, target: str = "gpu", decode: str | None = None,
             backend: str = "onnxruntime", temporal_backend: str | None = None) -> list[Model]:
    """Every model of the repository: the steps, the pipeline ensemble, and the answer-cache model
    in front of it that clients call (serving.ensemble).

    ``target`` cpu runs everything in the python backend (ONNX Runtime on the CPU inside it);
    gpu decodes with DALI (or ``decode='cpu'``: PyAV in the python backend) and runs the backbone
    with Triton's ``backend`` (onnxruntime with CUDA/TensorRT accelerators, or a tensorrt plan) and
    the temporal models with ``temporal_backend`` (default ``config.serving.gpu_temporal_backend``).
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    decode = decode or ("dali" if target == "gpu" else "cpu")
    if decode not in DECODERS:
        raise ValueError(f"decode must be one of {DECODERS}, got {decode!r}")
    if target == "cpu" and decode == "dali":
        raise ValueError("the cpu target decodes with PyAV (DALI's CPU decoder reads no H.264)")
    temporal_backend = temporal_backend or config.serving.gpu_temporal_backend
    for name, value in (("backend", backend), ("temporal_backend", temporal_backend)):
        if value not in BACKENDS:
            raise ValueError(f"{name} must be one of {BACKENDS}, got {value!r}")
    s, T, S, D, C = config.serving, config.num_frames, config.frame_size, config.feature_dim, config.num_classes
    net_kind = "python" if target == "cpu" else backend
    temporal_kind = "python" if target == "cpu" else temporal_backend

    video = Tensor(s.video, "TYPE_UINT8", (-1,), ragged=True)
    indices = Tensor(s.frame_indices, "TYPE_INT32", (T,))
    # The PyAV decode hands on the K <= T distinct pictures and the map back to T rows
    # (serving.dedup_frames); DALI hands on all T frames, and there the map is the identity, so
    # that repository has no FRAME_MAP tensor. Videos with different K batch together in the
    # python models (ragged); Triton's own backends batch requests of equal shape only.
    with_map = decode == "cpu"
    frame_rows = -1 if with_map else T
    frames_out = Tensor(s.frames, "TYPE_UINT8", (frame_rows, S, S, 3))
    frame_map = Tensor(s.frame_map, "TYPE_INT32", (T,))
    frames_in = Tensor(s.frames, "TYPE_UINT8", (-1, S, S, 3), ragged=net_kind == "python")
    features = Tensor(s.features, "TYPE_FP32", (-1, D))
    features_in = Tensor(s.features, "TYPE_FP32", (-1, D), ragged=True)  # temporal_views is python
    lengths = config.view_lengths
    views = tuple(Tensor(config.view_tensor(v), "TYPE_FP32", (lengths[v], D)) for v in config.tta_views)
    # Throughput mode: the python temporal model takes views of different lengths (several
    # videos') in one execution and runs each length as one ONNX Runtime batch. Not by default:
    # ONNX Runtime's LSTM gives a sequence run alone (batch 1) and one batched with another
    # sequence results ~1e-7 apart, so the default keeps Triton's equal-shape batches, where a
    # video's original and reverse views pair up and its other views run alone, answer after answer.
    sequence = Tensor(s.sequence, "TYPE_FP32", (-1, D),
                      ragged=temporal_kind == "python" and s.temporal_preferred_videos > 1)
    probs = Tensor(s.probs, "TYPE_FP32", (C,))
    probabilities = Tensor(s.probabilities, "TYPE_FP32", (C,), label_filename=LABELS_FILE)
    class_name = Tensor(s.class_name, "TYPE_STRING", (1,))
    avg_inputs = tuple(Tensor(name, "TYPE_FP32", (C,)) for name in config.average_inputs())
    # Evidence: optional outputs of the ensemble (a request gets only the outputs it names).
    times = (Tensor(s.frame_numbers, "TYPE_INT32", (T,)), Tensor(s.frame_times, "TYPE_FP32", (T,))) if s.evidence else ()
    attention = (Tensor(s.attention, "TYPE_FP32", (-1,)),) if s.evidence else ()
    avg_attention = tuple(Tensor(config.average_input(m, v, s.attention), "TYPE_FP32", (lengths[v],))
                          for m in config.temporal_model_names() for v in config.tta_views) if s.evidence else ()
    evidence = (Tensor(s.frame_attention, "TYPE_FP32", (T,)),
                Tensor(s.view_probabilities, "TYPE_FP32", (config.num_models, len(config.tta_views), C))
                ) if s.evidence else ()

    models = [
        # The probe learns which decoder follows it: with DALI it also applies serving.dali_codecs/_containers.
        Model(s.probe, "probe", "python", s.probe_batch, (video,), (indices, *times),
              params=((DECODER_PARAMETER, decode),)),
        Model(s.decode, "decode", "python" if decode == "cpu" else "dali",
              s.decode_batch if decode == "cpu" else s.dali_decode_batch, (video, indices),
              (frames_out, frame_map) if with_map else (frames_out,)),
        Model(s.backbone, "backbone", net_kind, s.backbone_batch, (frames_in,), (features,)),
        Model(s.views, "views", "python", s.views_batch, (features_in, frame_map) if with_map else (features_in,),
              views),
        *[Model(name, "temporal", temporal_kind, s.temporal_batch, (sequence,), (probs, *attention))
          for name in config.temporal_model_names()],
        Model(s.average, "average", "python", s.average_batch, avg_inputs + avg_attention,
              (probabilities, class_name, *evidence)),
    ]

    def io(*pairs):
        return tuple(pairs)

    steps = [
        Step(s.probe, io((s.video, s.video)), io((s.frame_indices, s.frame_indices), *((t.name, t.name) for t in times))),
        Step(s.decode, io((s.video, s.video), (s.frame_indices, s.frame_indices)),
             io((s.frames, s.frames), *([(s.frame_map, s.frame_map)] if with_map else []))),
        Step(s.backbone, io((s.frames, s.frames)), io((s.features, s.features))),
        Step(s.views, io((s.features, s.features), *([(s.frame_map, s.frame_map)] if with_map else [])),
             tuple((v.name, v.name) for v in views)),
    ]
    # Each temporal model once per view; Triton's dynamic batcher merges equal-length sequences
    # (e.g. original + reverse of every video in flight) into one execution.
    for name in config.temporal_model_names():
        for view in config.tta_views:
            steps.append(Step(name, io((s.sequence, config.view_tensor(view))),
                              io((s.probs, config.average_input(name, view)),
                                 *((a.name, config.average_input(name, view, a.name)) for a in attention))))
    steps.append(Step(s.average, tuple((t.name, t.name) for t in avg_inputs + avg_attention),
                      io((s.probabilities, s.probabilities), (s.class_name, s.class_name),
                         *((t.name, t.name) for t in evidence))))
    ensemble_batch = min(m.max_batch_size for m in models)  # Triton: at most each step's
    answer = (probabilities, class_name, *times, *evidence)
    models.append(Model(s.pipeline, "ensemble", "ensemble", ensemble_batch,
                        (Tensor(s.video, "TYPE_UINT8", (-1,)),), answer, tuple(steps)))
    # In front, the model clients call: answers repeated files from the answer cache and sends the
    # others through the pipeline (one request each, so at most the pipeline's batch size). It has
    # the pipeline's outputs, evidence included; a request gets the ones it names.
    models.append(Model(s.ensemble, "cache", "python", ensemble_batch, (video,), answer))
    return models


# ---- checking parsed configs ---------------------------------------------------------------------
class WiringError(ValueError):
    pass


def _compatible(a, b) -> bool:
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b))


def check_wiring(configs: dict) -> None:
    """Check every ensemble in ``configs`` (model name → parsed ``model_config_pb2.ModelConfig``).

    Raises :class:`WiringError` listing every problem found.
    """
    problems: list[str] = []
    for ens in (c for c in configs.values() if c.platform == "ensemble"):
        problems += _check_ensemble(ens, configs)
    if problems:
        raise WiringError("ensemble wiring:\n  " + "\n  ".join(problems))


def _dtype_name(value: int) -> str:
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2.DataType.Name(value)


def _check_ensemble(ens, configs) -> list[str]:
    problems: list[str] = []
    # tensor → (dtype, dims, producer)
    available = {t.name: (t.data_type, tuple(t.dims), "ensemble input") for t in ens.input}
    consumed: set[str] = set()
    pending = list(ens.ensemble_scheduling.step)
    if not pending:
        return [f"{ens.name}: no steps"]
    # Take steps in any order whose inputs exist (Triton runs them as their inputs arrive); a step
    # that never becomes runnable consumes a tensor nobody produces (or a cycle).
    while pending:
        ready = [st for st in pending if all(v in available for v in st.input_map.values())]
        if not ready:
            for st in pending:
                missing = sorted(v for v in st.input_map.values() if v not in available)
                problems.append(f"step {st.model_name}: consumes {missing}, never produced before it")
            break
        for st in ready:
            pending.remove(st)
            problems += _check_step(ens, st, configs, available, consumed)
    for t in ens.output:
        if t.name not in available:
            problems.append(f"ensemble output {t.name} is never produced")
            continue
        dtype, dims, who = available[t.name]
        consumed.add(t.name)
        if dtype != t.data_type or not _compatible(dims, tuple(t.dims)):
            problems.append(f"ensemble output {t.name}: {_dtype_name(t.data_type)}{list(t.dims)} but "
                            f"{who} gives {_dtype_name(dtype)}{list(dims)}")
    for name, (_, _, who) in available.items():
        if name not in consumed:
            problems.append(f"tensor {name} from {who} is never used")
    # Triton (2.51) stops such an ensemble with "unexpected deadlock" on every request that does
    # not name that output: a step's input must not be an ensemble output as well.
    step_inputs = {v: st.model_name for st in ens.ensemble_scheduling.step for v in st.input_map.values()}
    for t in ens.output:
        if t.name in step_inputs:
            problems.append(f"ensemble output {t.name} is also an input of step {step_inputs[t.name]} "
                            "(requests that do not ask for it would deadlock)")
    return problems


def _check_step(ens, st, configs, available, consumed) -> list[str]:
    problems: list[str] = []
    model = configs.get(st.model_name)
    if model is None:
        return [f"step {st.model_name}: no such model in the repository"]
    if model.max_batch_size < ens.max_batch_size:
        problems.append(f"step {st.model_name}: max_batch_size {model.max_batch_size} < ensemble's "
                        f"{ens.max_batch_size}")
    inputs = {t.name: t for t in model.input}
    outputs = {t.name: t for t in model.output}
    for key, tensor in st.input_map.items():
        if key not in inputs:
            problems.append(f"step {st.model_name}: model has no input {key}")
            continue
        dtype, dims, who = available[tensor]
        consumed.add(tensor)
        want = inputs[key]
        if dtype != want.data_type or not _compatible(dims, tuple(want.dims)):
            problems.append(f"step {st.model_name}: input {key} wants {_dtype_name(want.data_type)}"
                            f"{list(want.dims)}, {tensor} from {who} is {_dtype_name(dtype)}{list(dims)}")
    for key in inputs:
        if key not in st.input_map and not inputs[key].optional:
            problems.append(f"step {st.model_name}: input {key} is not mapped")
    for key, tensor in st.output_map.items():
        if key not in outputs:
            problems.append(f"step {st.model_name}: model has no output {key}")
            continue
        if tensor in available:
            problems.append(f"step {st.model_name}: {tensor} is already produced by {available[tensor][2]}")
            continue
        out = outputs[key]
        available[tensor] = (out.data_type, tuple(out.dims), f"step {st.model_name}")
    return problems
