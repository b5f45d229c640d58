"""The single source of truth: classes, shapes, numbers, model and tensor names.

Everything else (feature extraction, training, ONNX export, Triton config generation, the python
backend models, the DALI pipeline and the client) reads a :class:`VidclsConfig`. It is frozen,
serializes to JSON (checkpoints and model repositories carry it) and is torch-free so that the
serving image and the client can import it.

The defaults are the production model's numbers (docs/design.md); :meth:`VidclsConfig.tiny` is the small
configuration the tests and the demo use (same code paths, smaller numbers).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from vidcls.backbones import BACKBONES, IMAGENET_MEAN, IMAGENET_STD

# Output width of each backbone with its classification head replaced by identity, from its
# record (vidcls.backbones, where everything else about each backbone is too).
BACKBONE_DIMS: dict[str, int] = {name: spec.feature_dim for name, spec in BACKBONES.items()}
# Features computed outside vidcls (a reference project's feature file, another extractor): any
# width, known only from the files. Training and evaluation read them; extraction and export
# refuse this backbone, since vidcls cannot compute such features from video.
EXTERNAL_BACKBONE = "external"

CLASSES: tuple[str, ...] = ("Animation", "Flat_Content", "Gaming", "Natural_Content")
TTA_VIEWS: tuple[str, ...] = ("original", "reverse", "speed_up", "speed_down")
BACKBONE_PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
TEMPORAL_PRECISIONS: tuple[str, ...] = ("fp32", "fp16")

# A model repository carries its VidclsConfig as this JSON file at its root; each python model's
# config.pbtxt may name another one (relative to the model's folder) in this parameter.
REPOSITORY_CONFIG_FILE = "vidcls_config.json"
CONFIG_PARAMETER = "vidcls_config"
# What `vidcls export` wrote, per served graph (vidcls.export.fp16.precision_summary): op types per
# compute type, weight bytes per element type, I/O types. The deployment budget reads it.
PRECISION_RECORD_FILE = "precision.json"
# The probe's config.pbtxt parameter naming the decode step that follows it ("cpu" | "dali"): with
# DALI the probe also refuses what DALI cannot decode (serving.dali_codecs / dali_containers).
DECODER_PARAMETER = "decoder"


def backbones_for_width(feature_dim: int) -> list[str]:
    """The backbones that give ``feature_dim``-d features, preferred first (BACKBONE_DIMS order:
    efficientnet_v2_s before efficientnet_v2_m, resnet50 before resnet101)."""
    return [name for name, dim in BACKBONE_DIMS.items() if dim == feature_dim]


def default_backbone_weights(backbone: str) -> str:
    """``none`` for a backbone without pretrained weights (the tiny CNN: random init), else
    ``imagenet`` (external features included: the reference project's came from ImageNet CNNs)."""
    spec = BACKBONES.get(backbone)
    return "none" if spec is not None and not spec.pretrained else "imagenet"


@dataclass(frozen=True)
class TemporalConfig:
    """SuperEnhancedTemporalModel hyperparameters; the keys of the reference's model_config."""

    feature_dim: int = 1280
    hidden_dim: int = 768
    num_classes: int = 4
    num_lstm_layers: int = 4
    num_attention_heads: int = 12
    dropout: float = 0.4
    bidirectional: bool = True


@dataclass(frozen=True)
class TrainConfig:
    """Training recipe (docs/design.md). Defaults reproduce the reference; improvements are opt-in."""

    lr: float = 1e-3
    weight_decay: float = 5e-4
    batch_size: int = 48
    epochs: int = 150
    patience: int = 25
    cosine_t0: int = 20
    cosine_t_mult: int = 2
    cosine_eta_min: float = 1e-6
    # The reference stepped the warm-restart scheduler once per batch; "epoch" is the opt-in fix.
    scheduler_step: str = "batch"
    focal_gamma: float = 2.0
    label_smoothing: float = 0.1
    alpha_min: float = 0.5
    alpha_max: float = 10.0
    balanced_sampler: bool = True
    grad_clip: float = 1.0
    aug_subsample_p: float = 0.5
    aug_subsample_min_frac: float = 0.7
    aug_subsample_min_rows: int = 8
    aug_roll_p: float = 0.3
    aug_roll_max: int = 3
    aug_noise_p: float = 0.2
    aug_noise_sigma: float = 0.01
    # Opt-in improvement: mask padding in attention/pooling/LSTM during training (docs/design.md).
    mask_padding: bool = True


# The file name extensions of each container (FFmpeg demuxer name): the one rule for "is this a
# video file" when a folder is searched (client discovery, feature extraction), derived from the
# allowed containers (InputLimits.video_extensions), so a folder never yields files of a container
# the probe refuses. Names FFmpeg reports but no user file carries (m4a: audio) have none.
CONTAINER_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "mov": (".mov", ".qt"),
    "mp4": (".mp4", ".m4v"),
    "m4a": (),
    "3gp": (".3gp",),
    "3g2": (".3g2",),
    "mj2": (".mj2",),
    "matroska": (".mkv",),
    "webm": (".webm",),
    "avi": (".avi", ".divx"),
    "mpegts": (".ts", ".m2ts", ".mts", ".m2t"),
    "flv": (".flv", ".f4v"),
    "ogg": (".ogv", ".ogg", ".ogm"),
    "mpeg": (".mpg", ".mpeg", ".vob", ".mod", ".vro", ".m2p"),
    "asf": (".wmv", ".asf"),
    "mxf": (".mxf",),
    "dv": (".dv", ".dif"),
}


@dataclass(frozen=True)
class InputLimits:
    """What the probe accepts before any decoding. Each limit is named in its error.

    The allow-lists are the security boundary: FFmpeg has demuxers and decoders for hundreds of
    formats, and only those below are ever opened. Every exclusion and its reason: docs/limits.md.
    """

    max_bytes: int = 512 * 1024 * 1024
    max_duration_s: float = 4 * 3600.0
    max_frames: int = 500_000
    max_width: int = 4096
    max_height: int = 4096
    min_side: int = 2
    # FFmpeg demuxer names (as PyAV reports container.format.name, comma lists split): MP4/MOV and
    # their phone/camera kin, Matroska/WebM, AVI, MPEG-TS (broadcast, AVCHD), FLV, Ogg, MPEG
    # program streams (.mpg, DVD .vob, camcorders), ASF (.wmv), MXF (broadcast/camera), DV.
    allowed_containers: tuple[str, ...] = (
        "mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi", "mpegts", "flv", "ogg",
        "mpeg", "asf", "mxf", "dv",
    )
    # FFmpeg decoder names (codec_context.name). Delivery codecs; the MPEG-4 part 2 family of
    # AVI/WMV archives (msmpeg4 = MS-MPEG4 v3 "DivX 3"), Windows Media Video 7-9 and VC-1, H.263
    # (3GP phones), Flash video (flv = Sorenson Spark, vp6/vp6f/vp6a = On2 VP6), Cinepak and
    # Sorenson 1/3 (old AVI/QuickTime); camera/editing codecs (ProRes, DNxHD/HR, DV); and the
    # lossless screen/game capture codecs (QuickTime Animation, TechSmith, Fraps, DOSBox ZMBV).
    allowed_codecs: tuple[str, ...] = (
        "h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mpeg2video", "mpeg1video", "mjpeg", "theora",
        "msmpeg4v1", "msmpeg4v2", "msmpeg4", "wmv1", "wmv2", "wmv3", "vc1", "h263", "h263p", "flv",
        "vp6", "vp6f", "vp6a", "cinepak", "svq1", "svq3", "prores", "dnxhd", "dvvideo",
        "qtrle", "tscc", "tscc2", "fraps", "zmbv",
    )
    # A stream whose tail does not decode is accepted when at most this share of its counted
    # frames is missing (the missing sampled frames repeat the last decoded one).
    max_missing_fraction: float = 0.1
    # Wall-clock budget for decoding one video (the decode step, extraction, the reference). A file
    # that stays within every limit above can still take long to decode (4 h of 4K at the
    # defaults); past this it is refused instead of holding a decode instance. Seeking keeps
    # decode time small for long files with frequent key frames (vidcls.video.decode_frames).
    max_decode_s: float = 600.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "InputLimits":
        """Limits published by a server (the ensemble's ``limits_parameter``); keys this version
        does not know are ignored, so a newer server's limits still apply here."""
        known = {f.name for f in dataclasses.fields(cls)}
        return _build(cls, {k: v for k, v in data.items() if k in known})

    def video_extensions(self) -> frozenset[str]:
        """Lower-case file name extensions (with the dot) of the allowed containers."""
        return frozenset(ext for name in self.allowed_containers for ext in CONTAINER_EXTENSIONS.get(name, ()))


@dataclass(frozen=True)
class ServingConfig:
    """Triton model names, tensor names and batching. Nothing else spells these strings."""

    # What clients call: the answer cache in front of the pipeline (vidcls.triton_models.cache).
    ensemble: str = "vidcls"
    # The ensemble of the steps below (probe → decode → backbone → views → temporal → average).
    pipeline: str = "vidcls_pipeline"
    probe: str = "video_probe"
    decode: str = "video_decode"
    backbone: str = "backbone"
    views: str = "temporal_views"
    temporal_prefix: str = "temporal_"
    average: str = "ensemble_average"

    video: str = "VIDEO"
    frame_indices: str = "FRAME_INDICES"
    frames: str = "FRAMES"
    frame_map: str = "FRAME_MAP"
    features: str = "FEATURES"
    view_prefix: str = "VIEW_"
    sequence: str = "SEQUENCE"
    probs: str = "PROBS"
    probabilities: str = "PROBABILITIES"
    class_name: str = "CLASS_NAME"
    # The ensemble's config.pbtxt parameter listing the class names (JSON), so that a client learns
    # them from the server (a repository may serve any class set).
    classes_parameter: str = "vidcls_classes"
    # The ensemble's config parameter that publishes the input limits (JSON): clients read it to
    # refuse an oversize file without sending it, and to pick a folder's files as the probe would.
    limits_parameter: str = "vidcls_limits"
    # Evidence (optional ensemble outputs; Triton returns only the outputs a request names):
    # each temporal model's attention-pooling weights per sequence row, the time stamp of every
    # sampled frame (probe), the per-frame attention averaged over models and views, and the
    # per-model, per-view probabilities whose mean is PROBABILITIES (ensemble_average).
    evidence: bool = True
    attention: str = "ATTENTION"
    frame_times: str = "FRAME_TIMES"
    # The sampled frames' numbers: FRAME_INDICES' values under a name of their own, because a
    # Triton ensemble (2.51) whose output is also another step's input stops with "unexpected
    # deadlock" on every request that does not ask for that output.
    frame_numbers: str = "FRAME_NUMBERS"
    frame_attention: str = "FRAME_ATTENTION"
    view_probabilities: str = "VIEW_PROBABILITIES"

    # Per-model max_batch_size (requests, i.e. videos or sequences, per execution).
    probe_batch: int = 16
    decode_batch: int = 8
    backbone_batch: int = 4
    views_batch: int = 16
    temporal_batch: int = 16
    average_batch: int = 16
    max_queue_delay_us: int = 2000
    # Identical frames: the PyAV decode step hands on each distinct decoded picture once (FRAMES,
    # [K <= T, S, S, 3], compared after the resize: hash, then the bytes) and FRAME_MAP (INT32 [T],
    # the FRAMES row of each sampled position); the backbone runs on the K distinct pictures and
    # temporal_views gathers the features back to T rows, the same features bit for bit.
    # Static content (slides, terminals, held animation frames) repeats pictures exactly. Off:
    # all T frames go on (FRAME_MAP is the identity), e.g. so that a gpu backbone served by
    # Triton's own backends batches videos of equal shape. The DALI decode always hands on T frames.
    dedup_frames: bool = True
    # Repeated uploads: answers kept by the SHA-256 of the file (vidcls.answer_cache), least
    # recently used dropped first; an entry is ~0.3 kB, so the default holds ~20 MB. 0 = off (every
    # request goes through the pipeline). A request with the parameter cache_parameter = false
    # neither reads nor writes the cache.
    answer_cache_entries: int = 65536
    cache_parameter: str = "answer_cache"
    # Throughput mode for the temporal models (cpu target, python backend). A video batched with
    # another costs each temporal model less than one run alone, but videos leave the backbone
    # seconds apart, so batches of two rarely form by chance. temporal_preferred_videos = N (> 1)
    # makes each temporal model wait up to temporal_queue_delay_us for the views of N videos
    # before it runs; size the delay from the backbone's time per video (what separates two
    # videos at the temporal step under load).
    # 0 = off (the default: a lone video never waits; docs/performance.md has the measurements).
    temporal_preferred_videos: int = 0
    temporal_queue_delay_us: int = 0
    # Model instances. cpu target: every model KIND_CPU. gpu target: networks and DALI on the GPU,
    # python steps on the CPU with a few instances (PyAV decode, the CPU-heavy one, more).
    cpu_instances: int = 1
    # cpu target, backbone instances (0 = cpu_instances). Two instances, each with all cores
    # (backbone_threads 0, spinning off): one video alone gets every core, two videos in flight
    # run side by side, so neither a lone video nor a full load leaves cores idle
    # (docs/performance.md, "ONNX Runtime threads").
    cpu_backbone_instances: int = 2
    gpu_model_instances: int = 1
    gpu_python_instances: int = 2
    gpu_decode_instances: int = 4
    # gpu target, DALI decode. The DALI backend fails every request of a batch when one sample
    # fails, so the decode model takes one video per execution (max_batch_size 1) and runs
    # dali_instances of them side by side instead: one bad video fails only its own request. Cost,
    # measured with CPU DALI on VP9 clips (benchmarks/bench_dali_isolation.py): docs/deployment.md.
    dali_decode_batch: int = 1
    dali_instances: int = 4
    # What the DALI decode path reads (NVDEC through fn.decoders.video, demuxed by DALI's FFmpeg):
    # the probe of a --decode dali repository refuses anything else with the code "dali_unsupported"
    # before it reaches DALI (InputLimits still applies first). MPEG-1/2, MPEG-4 Part 2, Theora and
    # MJPEG stay on the --decode cpu repositories.
    dali_codecs: tuple[str, ...] = ("h264", "hevc", "vp8", "vp9", "av1")
    dali_containers: tuple[str, ...] = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm")
    # Threads for ONNX Runtime sessions inside the cpu-target python models (0 = ORT default, one
    # per physical core). The per-role fields below override it when non-zero.
    ort_intra_op_threads: int = 0
    # The backbone (convolutions over 64+ frames) scales with cores: 0 = every usable core
    # (per instance; -1 = the usable cores divided among the instances).
    backbone_threads: int = 0
    # The four temporal models run in four python-backend processes at the same time; their
    # BiLSTMs are chains of small matrix products that gain little from a second thread, so one
    # thread each lets them run side by side instead of four pools fighting over the cores
    # (measured with benchmarks/bench_pipeline.py).
    temporal_threads: int = 1
    # ONNX Runtime's idle intra-op threads spin-wait by default: with the backbone, four temporal
    # sessions and the decoder in separate processes on few cores, spinning pools burn the cores
    # the busy one needs (docs/performance.md, "ONNX Runtime threads").
    ort_spinning: bool = False
    # gpu target, temporal (BiLSTM) models: "onnxruntime" (Triton's onnxruntime backend; cuDNN's
    # LSTM through the CUDA EP) or "tensorrt" (an FP16 plan). TensorRT has known slow and wrong
    # BiLSTM cases, so ORT CUDA is the default until benchmarks/gpu_bench.py has measured both on
    # the serving GPU (it times both and checks each against ONNX Runtime CPU FP32).
    gpu_temporal_backend: str = "onnxruntime"
    # The onnxruntime backend's GPU accelerator per role: "tensorrt" (ORT's TensorRT EP, FP16,
    # engine cache) or "cuda" (the CUDA EP alone).
    gpu_backbone_accelerator: str = "tensorrt"
    gpu_temporal_accelerator: str = "cuda"
    # TensorRT / ORT-TRT: workspace sized for a 10 GB A100 MIG slice.
    trt_workspace_bytes: int = 2 * 1024 ** 3
    # gpu target, ONNX Runtime's TensorRT EP: where it writes its engine and timing caches. Must be
    # a writable volume that survives restarts (the model repository is mounted read-only): without
    # it every start rebuilds the engines, minutes inside the startup probe's window.
    trt_cache_dir: str = "/var/cache/vidcls/trt"
    # Backbone precision: "fp32" (default; the served probabilities equal the PyTorch reference)
    # or "int8" (opt-in, `vidcls export --int8-calibration VIDEOS`): ONNX Runtime static
    # quantization, QDQ format (per-channel int8 weights, uint8 activations, MinMax ranges from
    # int8_calibration_frames sampled frames of the user's videos), for the cpu target only: ONNX
    # Runtime runs the QDQ graph on integer kernels (faster, docs/performance.md), TensorRT takes no
    # unsigned activations (the gpu export refuses it). The export refuses a graph whose features
    # have a cosine similarity below int8_min_cosine with the FP32 features on any of
    # int8_check_frames other frames (it refused on every stand-in for ImageNet weights we could
    # build: vidcls.export.quantize).
    backbone_precision: str = "fp32"
    # The temporal models' graphs: "fp32" (cpu target) or "fp16" (gpu target, see below).
    temporal_precision: str = "fp32"
    # gpu target: the precision `vidcls export --target gpu` writes (`--precision`). TensorRT 11
    # takes precision from the ONNX graph alone (no FP16 builder flag), so "fp16" exports
    # mixed-precision graphs (vidcls.export.fp16): FP16 compute, FP32 graph inputs and outputs,
    # and the op types below kept in FP32; the same graph serves Triton's onnxruntime backend
    # and the TensorRT plans. "fp32" exports the FP32 graphs (served equal to the reference
    # within 1e-5, at several times the GPU time and twice the weight memory).
    gpu_precision: str = "fp16"
    # Op types that compute in FP32 inside the FP16 graphs: normalizations and softmaxes (their
    # sums and divisions lose most in FP16), reductions and pooling (long sums), and the LSTM,
    # whose cell state carries rounding from step to step over up to 109 steps.
    fp16_fp32_ops: tuple[str, ...] = ("LayerNormalization", "Softmax", "LogSoftmax", "ReduceMean", "ReduceSum",
                                      "ReduceL2", "ReduceLogSumExp", "GlobalAveragePool", "LSTM", "Exp", "Log",
                                      "Pow", "Sqrt")
    # gpu target, --decode dali: the GPU the repository is deployed on (`vidcls export --gpu`):
    # its NVDEC decides which bit depths and chroma formats of each codec the probe lets through
    # to DALI (vidcls.nvdec; the rest is refused as dali_unsupported).
    target_gpu: str = "a100"
    int8_calibration_frames: int = 128
    int8_check_frames: int = 64
    int8_min_cosine: float = 0.98


@dataclass(frozen=True)
class VidclsConfig:
    classes: tuple[str, ...] = CLASSES
    num_frames: int = 64
    frame_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    backbone: str = "efficientnet_v2_s"
    backbone_batch: int = 24
    scales: tuple[float, ...] = (1.0, 0.85, 1.15)
    tta_views: tuple[str, ...] = TTA_VIEWS
    num_models: int = 4
    seed: int = 42
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    limits: InputLimits = field(default_factory=InputLimits)
    serving: ServingConfig = field(default_factory=ServingConfig)

    def __post_init__(self) -> None:
        if self.backbone == EXTERNAL_BACKBONE:
            if self.temporal.feature_dim < 1:
                raise ValueError("temporal.feature_dim must be >= 1")
        elif self.backbone not in BACKBONE_DIMS:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose from "
                             f"{sorted(BACKBONE_DIMS) + [EXTERNAL_BACKBONE]}")
        elif self.temporal.feature_dim != BACKBONE_DIMS[self.backbone]:
            raise ValueError(
                f"temporal.feature_dim={self.temporal.feature_dim} does not match backbone "
                f"{self.backbone} ({BACKBONE_DIMS[self.backbone]}-d); use VidclsConfig.for_backbone()"
            )
        if self.temporal.num_classes != len(self.classes):
            raise ValueError("temporal.num_classes must equal len(classes)")
        unknown = set(self.tta_views) - set(TTA_VIEWS)
        if unknown:
            raise ValueError(f"unknown TTA views {sorted(unknown)}")
        if self.serving.backbone_precision not in BACKBONE_PRECISIONS:
            raise ValueError(f"serving.backbone_precision must be one of {BACKBONE_PRECISIONS}, "
                             f"got {self.serving.backbone_precision!r}")
        for name, allowed in (("temporal_precision", TEMPORAL_PRECISIONS), ("gpu_precision", TEMPORAL_PRECISIONS)):
            if getattr(self.serving, name) not in allowed:
                raise ValueError(f"serving.{name} must be one of {allowed}, got {getattr(self.serving, name)!r}")
        from vidcls.nvdec import GPUS

        if self.serving.target_gpu not in GPUS:
            raise ValueError(f"serving.target_gpu must be one of {sorted(GPUS)}, got {self.serving.target_gpu!r}")
        if len({class_key(c) for c in self.classes}) != len(self.classes):
            raise ValueError(f"class names {list(self.classes)} differ only in case, '_', '-' or spaces: "
                             "folders could not tell them apart")
        if self.num_frames < 1 or self.frame_size < 2:
            raise ValueError("num_frames >= 1 and frame_size >= 2 required")

    # ---- derived numbers -------------------------------------------------------------------
    @property
    def feature_dim(self) -> int:
        return self.temporal.feature_dim  # checked against the backbone's width in __post_init__

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def display_names(self) -> tuple[str, ...]:
        return tuple(c.replace("_", " ") for c in self.classes)

    @property
    def seq_len(self) -> int:
        """Length L of the multi-scale sequence (73 for the defaults)."""
        from vidcls.sampling import multiscale_length

        return multiscale_length(self.num_frames, self.scales)

    @property
    def view_lengths(self) -> dict[str, int]:
        """Sequence length of each TTA view (73, 73, 36, 109 for the defaults)."""
        from vidcls.sampling import view_indices

        return {v: len(view_indices(self.seq_len, v)) for v in self.tta_views}

    @property
    def model_seeds(self) -> tuple[int, ...]:
        return tuple(self.seed + i for i in range(self.num_models))

    def temporal_model_names(self) -> list[str]:
        return [f"{self.serving.temporal_prefix}{i}" for i in range(self.num_models)]

    def view_tensor(self, view: str) -> str:
        return f"{self.serving.view_prefix}{view.upper()}"

    def average_input(self, model: str, view: str, tensor: str | None = None) -> str:
        """The ensemble tensor (and ensemble_average input) carrying ``model``'s ``tensor`` output
        (default PROBS; ATTENTION for the evidence) for ``view``."""
        return f"{tensor or self.serving.probs}_{model}_{view.upper()}"

    def average_inputs(self, tensor: str | None = None) -> list[str]:
        """ensemble_average's inputs of one kind (PROBS by default): every temporal model's views,
        model by model."""
        return [self.average_input(m, v, tensor) for m in self.temporal_model_names() for v in self.tta_views]

    @property
    def backbone_onnx_file(self) -> str:
        """The backbone graph a repository serves: model.onnx (FP32) or model_int8.onnx (QDQ INT8,
        written beside the FP32 graph it was quantized from)."""
        return "model_int8.onnx" if self.serving.backbone_precision == "int8" else "model.onnx"

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def for_backbone(cls, backbone: str, feature_dim: int | None = None, **overrides: Any) -> "VidclsConfig":
        """A config for ``backbone`` with temporal.feature_dim set to match it (``feature_dim``
        gives the width of an :data:`EXTERNAL_BACKBONE`) and the normalization its weights expect."""
        temporal = overrides.pop("temporal", TemporalConfig())
        if isinstance(temporal, Mapping):
            temporal = TemporalConfig(**temporal)
        if backbone != EXTERNAL_BACKBONE:
            feature_dim = BACKBONE_DIMS[backbone]
            overrides.setdefault("mean", BACKBONES[backbone].mean)
            overrides.setdefault("std", BACKBONES[backbone].std)
        elif feature_dim is None:
            raise ValueError(f"backbone {EXTERNAL_BACKBONE!r} needs the feature width")
        temporal = dataclasses.replace(temporal, feature_dim=int(feature_dim))
        return cls(backbone=backbone, temporal=temporal, **overrides)

    @classmethod
    def for_features(cls, feature_dim: int, **overrides: Any) -> "VidclsConfig":
        """A config for features of width ``feature_dim`` whose backbone nothing records (the
        reference project's files): the preferred backbone of that width, else
        :data:`EXTERNAL_BACKBONE`."""
        known = backbones_for_width(feature_dim)
        return cls.for_backbone(known[0] if known else EXTERNAL_BACKBONE, feature_dim, **overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> "VidclsConfig":
        """Small numbers for tests: 16 frames of 64x64, the tiny CNN, a small temporal model."""
        base = dict(
            num_frames=16,
            frame_size=64,
            backbone_batch=16,
            temporal=TemporalConfig(feature_dim=BACKBONE_DIMS["tiny"], hidden_dim=32,
                                    num_lstm_layers=2, num_attention_heads=2, dropout=0.1),
            train=TrainConfig(batch_size=16, epochs=30, patience=10, cosine_t0=10),
        )
        base.update(overrides)
        return cls(backbone="tiny", **base)

    @classmethod
    def demo(cls, **overrides: Any) -> "VidclsConfig":
        """The demo: real frame count and size, tiny CNN, a small two-model ensemble."""
        base = dict(
            num_models=2,
            temporal=TemporalConfig(feature_dim=BACKBONE_DIMS["tiny"], hidden_dim=64,
                                    num_lstm_layers=1, num_attention_heads=4, dropout=0.2),
            train=TrainConfig(batch_size=16, epochs=30, patience=8, cosine_t0=10),
        )
        base.update(overrides)
        return cls(backbone="tiny", **base)

    def replace(self, **changes: Any) -> "VidclsConfig":
        return dataclasses.replace(self, **changes)

    def with_classes(self, classes: Sequence[str]) -> "VidclsConfig":
        """The same config for another class set (the temporal models' output width follows)."""
        names = tuple(classes)
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError(f"a class set needs at least two distinct names, got {list(names)}")
        for name in names:
            if not name or any(c in name for c in "/\\\n") or name != name.strip():
                raise ValueError(f"class name {name!r}: no slashes, line breaks or outer spaces")
        return self.replace(classes=names, temporal=dataclasses.replace(self.temporal, num_classes=len(names)))

    # ---- serialization ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "VidclsConfig":
        return _build(cls, data)

    @classmethod
    def from_json(cls, text: str) -> "VidclsConfig":
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "VidclsConfig":
        return cls.from_json(Path(path).read_text())


# Named configurations for the commands that take --preset: default = the numbers above, tiny =
# the tests', demo = 64 frames of 256 px with the tiny CNN.
PRESETS = {"default": VidclsConfig, "tiny": VidclsConfig.tiny, "demo": VidclsConfig.demo}


def _build(cls: type, data: Mapping[str, Any]) -> Any:
    """Rebuild a (nested) frozen dataclass from plain JSON data; lists become tuples.

    Unknown keys are an error, so a typo in a hand-edited config does not pass silently.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        default = getattr(cls, "__dataclass_fields__")[name]
        sub = default.default_factory() if default.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(sub) and isinstance(value, Mapping):
            kwargs[name] = _build(type(sub), value)
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def class_key(name: str) -> str:
    """How a folder or label is matched to a class: case, ``_``, ``-`` and spaces do not count."""
    return "".join(name.lower().replace("-", " ").replace("_", " ").split())


def class_index(name: str, classes: Sequence[str]) -> int | None:
    """The index of the class that ``name`` (a folder name, a label) names, or None. An exact
    match wins; otherwise ``animation``, ``Flat Content`` and ``natural-content`` name
    Animation, Flat_Content and Natural_Content."""
    if name in classes:
        return list(classes).index(name)
    keys = [class_key(c) for c in classes]
    key = class_key(name)
    return keys.index(key) if key in keys else None
