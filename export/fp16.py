"""Mixed-precision FP16 graphs for the gpu target, and how they are checked without a GPU.

Why: TensorRT 11 builds strongly typed networks only. It has no FP16 builder flag, no weak typing
and no per-layer precision: an engine computes in the types its ONNX graph declares, through
``--backend tensorrt`` plans and ONNX Runtime's TensorRT EP alike (``trt_fp16_enable`` on an FP32
graph builds an FP32 engine). NVIDIA's documented route is a mixed-precision graph (its ModelOpt
AutoCast tool writes one). vidcls writes its own with :func:`convert`, a small pass over the graph
that decides by op type, so that what computes in FP16 is plain to read and to test:

- every node computes in FP16 except the op types in ``config.serving.fp16_fp32_ops``
  (normalizations, softmaxes, reductions and pooling, the LSTM: see the config);
- float initializers feeding FP16 nodes are stored in FP16 (one FP32 copy is kept where an FP32
  node reads the same initializer), ``Constant`` nodes become initializers first;
- a ``Cast`` goes in wherever a tensor crosses between the two precisions (each tensor is cast
  once per target type); graph inputs and outputs keep their types (the uint8 frames in, FP32
  features and probabilities out), so the Triton configs and every client are unchanged.

Considered instead: onnxconverter-common's ``float16`` converter (last release 2025-08; its block
list works by op type too, but it needs fix-ups before TensorRT's strongly typed parser accepts
the result, as public reports of TensorRT 11 migrations describe) and NVIDIA ModelOpt AutoCast (a
large package with its own onnxruntime-gpu/CUDA requirements, and it picks FP32 nodes from data
ranges measured on calibration inputs). Neither is needed for ~150 lines that we can test.

Checking without a GPU (:func:`emulation_graph`): ONNX Runtime's CPU provider has no FP16
kernels for most of these ops (it would silently run them in FP32 behind inserted casts), so the
FP16 graph is checked through an FP32 graph that rounds like the GPU: every tensor the FP16
graph holds in FP16 is rounded to FP16 after the node that makes it (a ``Cast`` to FLOAT16 and
back), FP16 weights are their FP16 values, and the arithmetic inside a node is FP32. That is
what GPU FP16 kernels do where they accumulate in FP32 (tensor-core GEMMs and convolutions; the
products of two FP16 values are exact in FP32); a kernel that fuses several nodes rounds less
often than the emulation, never more. The FP32 nodes (LSTM included) run in FP32 on both.
"""

from __future__ import annotations

import collections
import logging
import os
from pathlib import Path
from typing import Iterable

import numpy as np

log = logging.getLogger(__name__)

FP16_MAX = 65504.0
# Ops whose output type an attribute fixes (Cast's 'to', ConstantOfShape's value): left as they
# are; their consumers cast what they need.
_FIXED_TYPE = frozenset({"Cast", "CastLike", "ConstantOfShape", "EyeLike", "RandomNormal", "RandomUniform",
                         "RandomNormalLike", "RandomUniformLike"})
# Float inputs the ONNX spec types as FP32 whatever the data's type: never converted.
_FP32_INPUTS = {"Resize": {1, 2}, "Dropout": {1}}


class ConversionError(ValueError):
    """The graph cannot be converted (a weight FP16 cannot hold, a control-flow subgraph)."""


def convert(model, fp32_ops: Iterable[str]):
    """The mixed-precision FP16 version of ``model`` (an onnx ModelProto; not modified)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
    fp32_ops = set(fp32_ops)
    model = onnx.shape_inference.infer_shapes(_constants_to_initializers(model), strict_mode=True)
    g = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute):
        raise ConversionError("graphs with control-flow subgraphs (If/Loop/Scan) are not converted")
    # Element type of every tensor in the FP32 graph: which node inputs/outputs are float.
    elem = {v.name: v.type.tensor_type.elem_type for v in list(g.input) + list(g.output) + list(g.value_info)}
    inits = {t.name: t for t in g.initializer}
    elem.update({name: t.data_type for name, t in inits.items()})
    consumers = collections.defaultdict(list)
    for node in g.node:
        for x in node.input:
            consumers[x].append(node)

    def wants_fp16(node) -> bool:
        return node.op_type not in fp32_ops and node.op_type not in _FIXED_TYPE

    # Initializers: FP16 where every float consumer is an FP16 node, an extra FP16 copy where both kinds read it.
    fp16_init: dict[str, str] = {}
    new_inits = []
    for name, t in inits.items():
        if t.data_type != FLOAT:
            continue
        kinds = {wants_fp16(n) and i not in _FP32_INPUTS.get(n.op_type, ())
                 for n in consumers[name] for i, x in enumerate(n.input) if x == name}
        if True not in kinds:
            continue
        values = numpy_helper.to_array(t)
        if values.size and float(np.max(np.abs(values))) > FP16_MAX:
            raise ConversionError(f"initializer {name!r} holds values beyond FP16's range ({FP16_MAX})")
        half = numpy_helper.from_array(values.astype(np.float16), name if kinds == {True} else f"{name}__fp16")
        if kinds == {True}:
            t.CopyFrom(half)
        else:
            new_inits.append(half)
        fp16_init[name] = half.name
    g.initializer.extend(new_inits)

    # Element type of each tensor as converted so far (initializers converted in place are FP16).
    now = {name: FLOAT16 if fp16_init.get(name) == name else elem.get(name) for name in elem}
    for inp in g.input:
        now[inp.name] = inp.type.tensor_type.elem_type
    casts: dict[tuple[str, int], str] = {}
    nodes = []

    def as_type(name: str, to: int) -> str:
        if name in fp16_init and to == FLOAT16:
            return fp16_init[name]
        if now.get(name) == to:
            return name
        key = (name, to)
        if key not in casts:
            casts[key] = f"{name}__to_{'fp16' if to == FLOAT16 else 'fp32'}"
            nodes.append(helper.make_node("Cast", [name], [casts[key]], to=to, name=f"cast_{casts[key]}"))
            now[casts[key]] = to
        return casts[key]

    for node in g.node:
        if node.op_type in _FIXED_TYPE:  # reads any type, writes the type its attribute names
            nodes.append(node)
            continue
        target = FLOAT16 if wants_fp16(node) else FLOAT
        keep = _FP32_INPUTS.get(node.op_type, ())
        for i, x in enumerate(node.input):
            if x and elem.get(x) == FLOAT:
                node.input[i] = as_type(x, FLOAT if i in keep else target)
        for y in node.output:
            now[y] = target if elem.get(y) == FLOAT else elem.get(y)
        nodes.append(node)

    # Graph outputs keep their FP32 type: the last node writes an FP16 tensor, a Cast gives the name back.
    for out in g.output:
        if out.type.tensor_type.elem_type == FLOAT and now.get(out.name) == FLOAT16:
            inner = f"{out.name}__fp16"
            for node in nodes:
                node.input[:] = [inner if x == out.name else x for x in node.input]
                node.output[:] = [inner if y == out.name else y for y in node.output]
            nodes.append(helper.make_node("Cast", [inner], [out.name], to=FLOAT, name=f"cast_{out.name}_to_fp32"))
    del g.node[:]
    g.node.extend(_topological(nodes, {i.name for i in g.input} | {t.name for t in g.initializer}))
    del g.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True, check_type=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def _constants_to_initializers(model):
    """A copy of ``model`` whose ``Constant`` nodes (tensor values) are initializers."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    keep = []
    for node in g.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Constant" and "value" in attrs:
            t = onnx.TensorProto()
            t.CopyFrom(attrs["value"].t)
            t.name = node.output[0]
            g.initializer.append(numpy_helper.from_array(numpy_helper.to_array(t), node.output[0]))
        else:
            keep.append(node)
    del g.node[:]
    g.node.extend(keep)
    return model


def _topological(nodes, available: set[str]) -> list:
    """``nodes`` in an order where every input is made before it is read (inserted Casts follow
    the tensor they cast; they were appended where first needed)."""
    ready, out, pending = set(available), [], list(nodes)
    while pending:
        progress = []
        for node in pending:
            if all(not x or x in ready for x in node.input):
                out.append(node)
                ready.update(node.output)
            else:
                progress.append(node)
        if len(progress) == len(pending):
            raise ConversionError(f"cannot order the converted graph: {pending[0].op_type} {pending[0].name!r}")
        pending = progress
    return out


def emulation_graph(fp16_model):
    """An FP32 graph that computes what the FP16 graph computes on a GPU (module docstring):
    FP16 initializers as their FP32 values, every FP16 tensor rounded to FP16 after its node."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
    model = onnx.shape_inference.infer_shapes(onnx.ModelProto.FromString(fp16_model.SerializeToString()))
    g = model.graph
    elem = {v.name: v.type.tensor_type.elem_type for v in list(g.input) + list(g.output) + list(g.value_info)}
    for t in g.initializer:
        if t.data_type == FLOAT16:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))
    nodes = []
    for node in g.node:
        nodes.append(node)
        for i, y in enumerate(node.output):
            if elem.get(y) != FLOAT16:
                continue
            if node.op_type == "Cast":  # Cast(to=FLOAT16) rounds already: keep it, widen after it
                node.output[i] = f"{y}__half"
                nodes.append(helper.make_node("Cast", [node.output[i]], [y], to=FLOAT))
            else:  # the node computes in FP32 here; its result is rounded as the FP16 tensor would be
                node.output[i] = f"{y}__wide"
                nodes.append(helper.make_node("Cast", [node.output[i]], [f"{y}__half"], to=FLOAT16))
                nodes.append(helper.make_node("Cast", [f"{y}__half"], [y], to=FLOAT))
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True, check_type=True)
    onnx.checker.check_model(model)
    return model


# ---- what a graph computes in, for tests and the repository's record ------------------------------
def precision_summary(model) -> dict:
    """Op types per compute type, weight bytes per element type and the graph's I/O types.

    A node's compute type is the element type of its first float output (Cast nodes and nodes
    with no float output are layout/bookkeeping and are counted under "other")."""
    import onnx
    from onnx import TensorProto

    model = onnx.shape_inference.infer_shapes(model)
    g = model.graph
    elem = {v.name: v.type.tensor_type.elem_type for v in list(g.input) + list(g.output) + list(g.value_info)}
    elem.update({t.name: t.data_type for t in g.initializer})
    name = TensorProto.DataType.Name
    ops: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for node in g.node:
        types = [elem.get(y) for y in node.output]
        floats = [t for t in types if t in (TensorProto.FLOAT, TensorProto.FLOAT16)]
        ops["other" if node.op_type == "Cast" or not floats else name(floats[0])][node.op_type] += 1
    weights: collections.Counter = collections.Counter()
    for t in g.initializer:
        weights[name(t.data_type)] += int(np.prod(t.dims, dtype=np.int64)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return {"ops": {k: dict(sorted(v.items())) for k, v in sorted(ops.items())},
            "weight_bytes": dict(sorted(weights.items())),
            "inputs": {v.name: name(v.type.tensor_type.elem_type) for v in g.input},
            "outputs": {v.name: name(v.type.tensor_type.elem_type) for v in g.output}}


def convert_file(src: str | os.PathLike, dst: str | os.PathLike, fp32_ops: Iterable[str]) -> Path:
    import onnx

    model = convert(onnx.load(str(src)), fp32_ops)
    onnx.save(model, str(dst))
    return Path(dst)


def emulation_session(fp16_path: str | os.PathLike, threads: int = 0):
    """An ONNX Runtime CPU session of :func:`emulation_graph` of the graph at ``fp16_path``.

    Graph optimizations stay at the basic level: the rounding Casts must survive (the basic level
    folds constants and removes only identities; tests/test_fp16.py checks that rounding happens)."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    blob = emulation_graph(onnx.load(str(fp16_path))).SerializeToString()
    return ort.InferenceSession(blob, sess_options=options, providers=["CPUExecutionProvider"])


# ---- the export's check: the FP16 graph (emulated) against the FP32 graph it came from -----------
def check_fp16(fp16_path: str | os.PathLike, fp32_path: str | os.PathLike, config, role: str, seed: int = 0,
               lengths: Iterable[int] | None = None, batches: Iterable[int] | None = None):
    """:func:`emulation_session` of the FP16 graph vs ONNX Runtime on the FP32 graph at the shapes
    the parity checks use → ParityReport, against the GPU tolerances of vidcls.export.tensorrt:
    temporal probabilities and attention weights within ``TRT_PROBS_ATOL``; backbone features within
    ``TRT_FEATURES_RTOL`` of their scale. The export fails beyond them, like the FP32 parity checks.
    ``lengths``/``batches`` (temporal) narrow the shapes checked."""
    import onnx

    from vidcls.export import parity
    from vidcls.export.parity import TRT_FEATURES_RTOL, TRT_PROBS_ATOL
    from vidcls.ort import make_session

    threads = parity.parity_threads()
    reference = make_session(fp32_path, intra_op_threads=threads, log_severity=4)
    emulated = emulation_session(fp16_path, threads=threads)
    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    input_name, outputs = graph.input[0].name, tuple(o.name for o in graph.output)
    rank = len(graph.input[0].type.tensor_type.shape.dim)
    rng = np.random.default_rng(seed)
    if role == "temporal":
        shapes = [(b, n, config.feature_dim) for n in (lengths or parity.temporal_lengths(config))
                  for b in (batches or parity.TEMPORAL_BATCHES)]
        tolerance, scale = TRT_PROBS_ATOL, (lambda ref: 1.0)

        def make_input(shape):
            return np.abs(rng.standard_normal(shape)).astype(np.float32)
    else:
        s = config.frame_size
        lead = [(b,) for b in parity.BACKBONE_BATCHES] if rank == 4 else [(1, 2), (2, 3)]
        shapes = [(*n, s, s, 3) for n in lead]
        tolerance, scale = TRT_FEATURES_RTOL, (lambda ref: max(float(np.max(np.abs(ref))), 1e-12))

        def make_input(shape):
            return parity.synthetic_frames(rng, shape)

    def run_reference(x):
        return tuple(reference.run(list(outputs), {input_name: x}))

    return parity._compare(f"fp16 {role} ({fp16_path})", "FP16 graph (emulated) vs FP32 graph", tolerance, shapes,
                           make_input, run_reference, emulated, input_name, scale, output_names=outputs)


def write_fp16(fp32_path: str | os.PathLike, path: str | os.PathLike, config, role: str, check: bool = True) -> Path:
    """Convert the FP32 graph at ``fp32_path`` (:func:`convert`, ``config.serving.fp16_fp32_ops``),
    check it (:func:`check_fp16`) and write it to ``path``; nothing is written when the check fails."""
    from vidcls.export import parity

    def write(tmp: Path) -> None:
        convert_file(fp32_path, tmp, config.serving.fp16_fp32_ops)

    return parity.write_checked(path, write, (lambda tmp: check_fp16(tmp, fp32_path, config, role)) if check else None)
