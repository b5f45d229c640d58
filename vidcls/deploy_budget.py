"""GPU memory budget of one Triton instance on a MIG slice, computed from the config object.

``python -m vidcls.deploy_budget`` prints a table (one row per component, MiB) and whether the
total fits the slice with the stated headroom. Everything here is arithmetic on
:class:`~vidcls.config.VidclsConfig` plus the assumptions of :class:`Assumptions` (each one named
and explained where it is defined), so the numbers move with the config: raise
``serving.backbone_batch`` and the backbone row grows.

Precision is read, not assumed: a repository records what it exported (its config's
``serving.gpu_precision``, and ``precision.json`` with the served graphs' weight bytes per element
type, see :mod:`vidcls.export.fp16`). ``--repository REPO`` budgets exactly that repository (its
backend, decode step and graphs); without it the budget is that of the default config as
``vidcls export --target gpu`` writes it (mixed-precision FP16 graphs, whose LSTMs stay FP32).

Why computed and not measured: the development machines have no GPU. The parameter counts are
exact (the temporal model's by formula, the backbones' from their records in
:mod:`vidcls.backbones`; the tests build the models with torch and check both). Activations are an upper estimate from a walk over
the architecture (largest set of tensors alive at once inside a block, times a safety factor).
On a real slice, confirm with ``nvidia-smi`` after a warm-up at full batch (docs/deployment.md).

Torch-free: the serving image imports nothing heavier than the config.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from typing import Iterator

from vidcls.backbones import BACKBONES
from vidcls.config import PRECISION_RECORD_FILE, REPOSITORY_CONFIG_FILE, VidclsConfig

MIB = 1024 ** 2
BACKENDS = ("tensorrt", "onnxruntime", "onnxruntime-cuda")


@dataclass(frozen=True)
class Assumptions:
    """What the budget cannot read from the config. Defaults are deliberately on the high side."""

    # An A100-80GB 1g.10gb / 1g.10gb+me slice shows about 9.5 GiB usable in nvidia-smi (part of
    # the 10 GB is reserved); we budget against that, not against 10 GB.
    slice_mib: int = 9728
    # Required free share of the slice after everything below is counted: covers allocator
    # fragmentation, the ORT/DALI arenas rounding up, and estimate error.
    headroom: float = 0.15
    # Resolution of the incoming videos: DALI decodes full-resolution frames before resizing,
    # so the decode buffers scale with it. 1080p is the design point; see max_source_pixels().
    source_width: int = 1920
    source_height: int = 1080
    # One CUDA context per tritonserver process, with cuBLAS/cuDNN/TensorRT kernels loaded lazily
    # (CUDA_MODULE_LOADING=LAZY, the default since CUDA 12.2). Eager loading costs ~1 GiB more.
    cuda_context_mib: int = 600
    # Per GPU model instance: TensorRT execution context bookkeeping or ORT session + CUDA EP
    # handles, cuBLAS workspace, cuDNN handle.
    per_instance_mib: int = 128
    # Extra per onnxruntime-backend session: ORT's CUDA-EP memory arena and the session's copies
    # of what the TensorRT accelerator does not take (the arena grows in powers of two).
    ort_session_mib: int = 256
    # Multiplies activation estimates: TensorRT tactic scratch, layout copies, arena round-up.
    activation_safety: float = 1.5
    # tritonserver --cuda-memory-pool-byte-size default (64 MiB per device).
    triton_cuda_pool_mib: int = 64
    # NVDEC decode surfaces (NV12, 1.5 bytes/pixel) held per decoder session; one session per
    # video in a DALI batch.
    nvdec_surfaces: int = 20
    # Decode→backbone batches alive at once in the ensemble (one being decoded while the previous
    # is in the backbone); their FRAMES tensors sit in GPU memory between the steps.
    in_flight_batches: int = 2
    # GPU instances per model come from config.serving.gpu_model_instances (Triton instance_group
    # on KIND_GPU). Python steps (probe, temporal_views, ensemble_average, PyAV decode) are
    # KIND_CPU in the gpu target and take no GPU memory; a KIND_GPU python model would add a
    # whole CUDA context (its own stub process) per instance.


@dataclass(frozen=True)
class Row:
    component: str
    params: int
    weights_mib: float
    activations_mib: float
    buffers_mib: float
    note: str = ""

    @property
    def total_mib(self) -> float:
        return self.weights_mib + self.activations_mib + self.buffers_mib


@dataclass(frozen=True)
class Budget:
    rows: tuple[Row, ...]
    assumptions: Assumptions
    backend: str
    decode: str
    precision: str = "fp16"
    source: str = "the default config"  # or the repository whose record was read

    @property
    def total_mib(self) -> float:
        return sum(r.total_mib for r in self.rows)

    @property
    def limit_mib(self) -> float:
        """The most the rows may add up to: the slice minus the required headroom."""
        return self.assumptions.slice_mib * (1.0 - self.assumptions.headroom)

    @property
    def fits(self) -> bool:
        return self.total_mib <= self.limit_mib

    @property
    def free_fraction(self) -> float:
        return 1.0 - self.total_mib / self.assumptions.slice_mib


# ---- parameter counts ------------------------------------------------------------------------
def temporal_params(config: VidclsConfig) -> int:
    """Exact parameter count of SuperEnhancedTemporalModel (vidcls.models.temporal) for ``config.temporal``."""
    t = config.temporal
    d, h, c = t.feature_dim, t.hidden_dim, t.num_classes
    dirs = 2 if t.bidirectional else 1
    e = h * dirs
    linear = lambda i, o: i * o + o  # noqa: E731
    norm = lambda n: 2 * n  # noqa: E731
    n = linear(d, h) + norm(h)  # input_projection
    for layer in range(t.num_lstm_layers):  # two bias vectors per gate set, as torch's LSTM has
        inp = h if layer == 0 else e
        n += dirs * (4 * h * (inp + h) + 8 * h)
    n += 4 * e * e + 4 * e  # MultiheadAttention: packed in_proj (3E x E) + out_proj
    n += norm(e)  # attention_norm
    n += linear(e, h) + norm(h) + linear(h, 1)  # attention_pooling
    n += linear(e, 768) + norm(768) + linear(768, 512) + norm(512) + linear(512, 256) + norm(256) + linear(256, c)
    return n


def lstm_params(config: VidclsConfig) -> int:
    """The LSTM's share of :func:`temporal_params` (what the FP16 graphs keep in FP32)."""
    t = config.temporal
    dirs = 2 if t.bidirectional else 1
    return sum(dirs * (4 * t.hidden_dim * ((t.hidden_dim if i == 0 else dirs * t.hidden_dim) + t.hidden_dim)
                       + 8 * t.hidden_dim) for i in range(t.num_lstm_layers))


def weight_bytes(config: VidclsConfig, role: str) -> int:
    """Weight bytes of one served graph of ``role`` at ``config.serving.gpu_precision``: FP32 4 bytes
    a parameter; FP16 2, except the op types the FP16 graphs keep in FP32
    (``serving.fp16_fp32_ops``: for these models the LSTM's weights; LayerNorm's are negligible)."""
    fp16 = config.serving.gpu_precision == "fp16"
    if role == "backbone":
        return backbone_params(config) * (2 if fp16 else 4)
    n, lstm = temporal_params(config), lstm_params(config)
    if not fp16:
        return 4 * n
    return 2 * (n - lstm) + (4 if "LSTM" in config.serving.fp16_fp32_ops else 2) * lstm


def backbone_params(config: VidclsConfig) -> int:
    return BACKBONES[config.backbone].params


# ---- activation estimates --------------------------------------------------------------------
def _block_live_elements(config: VidclsConfig) -> Iterator[int]:
    """Elements alive at once inside each block of the backbone, per frame (input, hidden, output),
    from the layer table of its record (:class:`vidcls.backbones.BackboneSpec`)."""
    s = config.frame_size
    spec = BACKBONES[config.backbone]
    stem, stages = spec.stem, spec.stages
    if spec.family == "efficientnet_v2":
        side = -(-s // 2)
        yield 3 * s * s + stem * side * side
        cin = stem
        for kind, expand, stride, cout, layers in stages:
            for i in range(layers):
                st = stride if i == 0 else 1
                out_side = -(-side // st)
                hidden = cin * expand
                # Fused-MBConv: one expanded tensor; MBConv: expanded + depthwise output.
                n_hidden = (1 if kind == "fused" else 2) if expand != 1 else 0
                yield cin * side * side + n_hidden * hidden * out_side * out_side + cout * out_side * out_side
                cin, side = cout, out_side
        yield cin * side * side + spec.feature_dim * side * side  # 1x1 head conv
    elif spec.family == "resnet":
        side = -(-s // 2)
        yield 3 * s * s + stem * side * side
        side = -(-side // 2)  # max pool
        cin = stem
        for stage, blocks in enumerate(stages):
            width = stem * 2 ** stage
            for i in range(blocks):
                st = 2 if (i == 0 and stage > 0) else 1
                out_side = -(-side // st)
                yield cin * side * side + width * side * side + width * out_side * out_side + 4 * width * out_side * out_side
                cin, side = 4 * width, out_side
    elif spec.family == "tiny":
        chans = [3, *stages]
        side = s
        for cin, cout in zip(chans[:-1], chans[1:]):
            out_side = -(-side // 2)
            yield cin * side * side + cout * out_side * out_side
            side = out_side
    else:  # pragma: no cover - a record of a family this walk does not know
        raise ValueError(f"no activation walk for backbone {spec.name!r} ({spec.family})")


def backbone_peak_elements_per_frame(config: VidclsConfig) -> int:
    return max(_block_live_elements(config))


def temporal_peak_elements_per_sequence(config: VidclsConfig, length: int) -> int:
    """Upper estimate of elements alive at once for one sequence of ``length`` rows."""
    t = config.temporal
    dirs = 2 if t.bidirectional else 1
    h, e, heads = t.hidden_dim, t.hidden_dim * dirs, t.num_attention_heads
    lstm = 4 * h * dirs + 2 * e  # precomputed gate inputs of a layer + its input and output
    attention = 3 * e + 2 * e  # Q, K, V + attended + residual sum
    return length * (t.feature_dim + 2 * h + lstm + attention + h) + heads * length * length


# ---- the budget ------------------------------------------------------------------------------
def compute_budget(config: VidclsConfig | None = None, backend: str = "tensorrt", decode: str = "dali",
                   assumptions: Assumptions | None = None, record: dict | None = None,
                   source: str = "the default config") -> Budget:
    """The GPU memory of one Triton process serving ``config`` on one slice.

    backend (the ``vidcls export --backend`` choices, plus one variant):
      ``tensorrt``: plans in Triton's TensorRT backend.
      ``onnxruntime``: Triton's onnxruntime backend with the TensorRT execution accelerator on the
      backbone (what the export writes): TensorRT-like numbers plus an ORT session and CUDA-EP
      arena (``Assumptions.ort_session_mib``) per instance.
      ``onnxruntime-cuda``: the same without the TensorRT accelerator (the CUDA EP alone).
    decode: ``dali`` (NVDEC, buffers on the GPU) or ``cpu`` (PyAV in the python backend, no GPU
    decode buffers; the FRAMES tensor is copied to the GPU for the backbone).
    Precision: ``config.serving.gpu_precision`` (what the gpu export writes and a repository's
    config records); weights from ``record`` (a repository's precision.json: the served graphs'
    own bytes) where given, else :func:`weight_bytes`. Activations take 2 bytes an element in FP16.
    """
    config = config or VidclsConfig()
    a = assumptions or Assumptions()
    if backend not in BACKENDS:
        raise ValueError(f"backend is one of {BACKENDS}")
    if decode not in ("dali", "cpu"):
        raise ValueError("decode is 'dali' or 'cpu'")
    sv = config.serving
    precision = sv.gpu_precision
    abytes = 2 if precision == "fp16" else 4

    def weights(name: str, role: str) -> int:
        if record and name in record:
            return sum(record[name]["weight_bytes"].values())
        return weight_bytes(config, role)

    per_instance = a.per_instance_mib + (a.ort_session_mib if backend.startswith("onnxruntime") else 0)
    t, s = config.num_frames, config.frame_size
    frame_bytes = s * s * 3  # uint8 FRAMES row
    inst = sv.gpu_model_instances
    rows: list[Row] = []

    rows.append(Row("CUDA context + kernels (tritonserver)", 0, 0, 0, a.cuda_context_mib,
                    "one per process; lazy module loading"))
    rows.append(Row("Triton CUDA memory pool", 0, 0, 0, a.triton_cuda_pool_mib, "--cuda-memory-pool-byte-size"))

    if decode == "dali":
        src = a.source_width * a.source_height
        n = sv.dali_decode_batch  # videos per DALI execution; dali_instances of them side by side
        decoded = n * t * src * 3  # full-resolution RGB frames before the resize
        surfaces = n * a.nvdec_surfaces * src * 3 // 2
        resized = n * t * frame_bytes
        rows.append(Row(f"{sv.decode} (DALI, NVDEC)", 0, 0, sv.dali_instances * (decoded + resized) / MIB,
                        sv.dali_instances * surfaces / MIB,
                        f"{sv.dali_instances} x batch {n} x {t} frames at {a.source_width}x{a.source_height}"))
    else:
        rows.append(Row(f"{sv.decode} (python, PyAV on CPU)", 0, 0, 0, 0, "KIND_CPU: no GPU memory"))

    frames = sv.backbone_batch * t  # frames per backbone execution
    peak = backbone_peak_elements_per_frame(config)
    b_params = backbone_params(config)
    # uint8 input + its float32 normalized copy (normalization is inside the graph) + the peak.
    b_act = frames * (frame_bytes + frame_bytes * 4 + peak * abytes * a.activation_safety)
    rows.append(Row(f"{sv.backbone} ({config.backbone}, {backend}, {precision})", b_params,
                    inst * weights(sv.backbone, "backbone") / MIB,
                    inst * b_act / MIB, inst * per_instance,
                    f"batch {sv.backbone_batch} videos = {frames} frames of {s}x{s}"))

    lmax = max(config.view_lengths.values())
    t_params = temporal_params(config)
    # The LSTM's gates and states dominate these activations; FP32 where the FP16 graph keeps the LSTM.
    t_abytes = 4 if precision == "fp32" or "LSTM" in sv.fp16_fp32_ops else 2
    t_act = sv.temporal_batch * temporal_peak_elements_per_sequence(config, lmax) * t_abytes * a.activation_safety
    for name in config.temporal_model_names():
        rows.append(Row(f"{name} (BiLSTM+attention, {backend}, {precision})", t_params,
                        inst * weights(name, "temporal") / MIB,
                        inst * t_act / MIB, inst * per_instance,
                        f"batch {sv.temporal_batch} sequences, L up to {lmax}"))

    # Tensors handed between steps while batches are in flight (the ensemble keeps them on the
    # GPU between GPU steps): FRAMES and FEATURES per video.
    between = a.in_flight_batches * max(sv.decode_batch, sv.backbone_batch) * (
        t * frame_bytes + t * config.feature_dim * 4)
    rows.append(Row("ensemble tensors in flight", 0, 0, 0, between / MIB,
                    f"{a.in_flight_batches} batches of FRAMES + FEATURES"))
    for name in (sv.probe, sv.views, sv.average):
        rows.append(Row(f"{name} (python)", 0, 0, 0, 0, "KIND_CPU: no GPU memory"))
    return Budget(tuple(rows), a, backend, decode, precision, source)


def max_source_pixels(config: VidclsConfig | None = None, backend: str = "tensorrt",
                      assumptions: Assumptions | None = None) -> int:
    """Largest source frame (width x height, pixels) whose DALI decode still fits the slice."""
    config = config or VidclsConfig()
    a = assumptions or Assumptions()
    lo, hi = 0, 4096 * 4096
    while lo < hi:  # the total grows monotonically with the source size
        mid = (lo + hi + 1) // 2
        b = compute_budget(config, backend, "dali", dataclasses.replace(a, source_width=mid, source_height=1))
        lo, hi = (mid, hi) if b.fits else (lo, mid - 1)
    return lo


def shm_budget_bytes(config: VidclsConfig | None = None, typical_video_mib: float = 32.0,
                     batches_in_flight: int | None = None) -> int:
    """/dev/shm a Triton container needs: the python backend moves every tensor through it.

    Sized for the heaviest variant (decode in the python backend): a decode batch of FRAMES held
    twice (stub output region + Triton's copy) per batch in flight, one batch per decode instance
    (config.serving.gpu_decode_instances), plus the encoded VIDEO bytes of a full probe batch,
    which the front model (held until the answer), probe and decode each receive.
    """
    config = config or VidclsConfig()
    sv = config.serving
    if batches_in_flight is None:
        batches_in_flight = sv.gpu_decode_instances
    frames = sv.decode_batch * config.num_frames * config.frame_size ** 2 * 3
    video = sv.probe_batch * typical_video_mib * MIB
    return int(2 * frames * batches_in_flight + 3 * video)


def format_table(budget: Budget) -> str:
    a = budget.assumptions
    head = ["component", "params", "weights", "activations", "buffers", "total MiB", "note"]
    body = [[r.component, f"{r.params / 1e6:.2f}M" if r.params else "-", f"{r.weights_mib:.0f}",
             f"{r.activations_mib:.0f}", f"{r.buffers_mib:.0f}", f"{r.total_mib:.0f}", r.note] for r in budget.rows]
    body.append(["TOTAL", "", "", "", "", f"{budget.total_mib:.0f}", ""])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in body]
    verdict = "FITS" if budget.fits else "DOES NOT FIT"
    out.append("")
    out.append(f"{verdict}: {budget.total_mib:.0f} MiB of a {a.slice_mib} MiB slice "
               f"({budget.free_fraction:.0%} free; required headroom {a.headroom:.0%}, "
               f"limit {budget.limit_mib:.0f} MiB). backend={budget.backend}, decode={budget.decode}, "
               f"precision={budget.precision} ({budget.source}), activation safety x{a.activation_safety}.")
    return "\n".join(out)


def read_repository(repo) -> tuple[VidclsConfig, str, str, dict | None]:
    """(config, backend, decode, precision record) of an exported gpu repository, from its config
    JSON, its backbone's and video_decode's config.pbtxt and its precision.json."""
    import json
    import re
    from pathlib import Path

    repo = Path(repo)
    if not (repo / REPOSITORY_CONFIG_FILE).is_file():
        raise ValueError(f"{repo} is not a model repository written by 'vidcls export' (no {REPOSITORY_CONFIG_FILE})")
    config = VidclsConfig.load(repo / REPOSITORY_CONFIG_FILE)
    if "gpu_precision" not in json.loads((repo / REPOSITORY_CONFIG_FILE).read_text()).get("serving", {}):
        # Exported before the gpu target wrote FP16 graphs (and recorded it): its graphs are FP32.
        config = config.replace(serving=dataclasses.replace(config.serving, gpu_precision="fp32"))
    sv = config.serving
    backbone = (repo / sv.backbone / "config.pbtxt").read_text()
    decode_cfg = (repo / sv.decode / "config.pbtxt").read_text()
    if re.search(r'^backend: "python"', backbone, re.M):
        raise ValueError(f"{repo} is a cpu-target repository: it takes no GPU memory")
    if re.search(r'^platform: "tensorrt_plan"', backbone, re.M):
        backend = "tensorrt"
    else:
        backend = "onnxruntime" if re.search(r'name: "tensorrt"', backbone) else "onnxruntime-cuda"
    decode = "dali" if re.search(r'^backend: "dali"', decode_cfg, re.M) else "cpu"
    record_path = repo / PRECISION_RECORD_FILE
    record = json.loads(record_path.read_text()) if record_path.is_file() else None
    return config, backend, decode, record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vidcls.deploy_budget", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--repository", default=None,
                   help="an exported gpu repository: budget its config, backend, decode step and the precision "
                        "of its graphs (its precision.json)")
    p.add_argument("--config", help="a VidclsConfig JSON file (default: the built-in defaults)")
    p.add_argument("--backend", choices=BACKENDS, default="tensorrt")
    p.add_argument("--decode", choices=("dali", "cpu"), default="dali")
    p.add_argument("--precision", choices=("fp16", "fp32"), default=None,
                   help="precision of the graphs, as `vidcls export --precision` (default: the config's "
                        "serving.gpu_precision, fp16)")
    p.add_argument("--slice-mib", type=int, default=Assumptions.slice_mib,
                   help="usable memory of the MIG slice (1g.10gb: ~9728; 1g.20gb/2g.20gb: ~19968)")
    p.add_argument("--source", default=f"{Assumptions.source_width}x{Assumptions.source_height}",
                   help="source video resolution WxH (DALI decodes full-size frames)")
    p.add_argument("--all", action="store_true", help="print every backend x decode combination")
    p.add_argument("--shm", action="store_true", help="also print the /dev/shm size a container needs")
    args = p.parse_args(argv)
    record, source = None, "the default config"
    if args.repository:
        try:
            config, backend, decode, record = read_repository(args.repository)
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        source = f"repository {args.repository}" + ("" if record else f", no {PRECISION_RECORD_FILE}: weights by formula")
        combos = [(backend, decode)]
    else:
        config = VidclsConfig.load(args.config) if args.config else VidclsConfig()
        combos = ([(b, d) for b in BACKENDS for d in ("dali", "cpu")] if args.all else [(args.backend, args.decode)])
    if args.precision:
        config = config.replace(serving=dataclasses.replace(config.serving, gpu_precision=args.precision))
        record = None  # another precision than the repository's: its graphs' bytes do not apply
    if args.shm:
        print(f"/dev/shm needed (python backend tensors, 32 MiB typical video): "
              f"{shm_budget_bytes(config) / MIB:.0f} MiB; docker/compose.yaml and deploy/k8s use 3 GiB\n")
    w, h = (int(x) for x in args.source.lower().split("x"))
    a = Assumptions(slice_mib=args.slice_mib, source_width=w, source_height=h)
    ok = True
    for backend, decode in combos:
        budget = compute_budget(config, backend, decode, a, record=record, source=source)
        print(format_table(budget))
        if decode == "dali":
            px = max_source_pixels(config, backend, a)
            print(f"largest source frame that still fits with DALI decode: {px / 1e6:.1f} Mpixel "
                  f"(1080p = 2.1, 1440p = 3.7, 4K UHD = 8.3)")
        print()
        ok &= budget.fits
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
