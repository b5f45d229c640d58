"""The custom metrics of the vidcls python steps: every name, label and bucket, and their recorder.

Triton serves them on its metrics port (``/metrics``) beside its own ``nv_*`` series, through the
python backend's metrics API (``pb_utils.MetricFamily``; counters and histograms, both in the
tritonserver 2.51 this project runs). Each python model process registers the families it uses; a family of the same name from
several models or instances is one series set in Triton (so ``vidcls_request_failures_total``
has one ``step`` label per model).

What each step reports (the DALI decode step is not a python model and reports nothing of its
own: on ``--decode dali`` repositories the packet, frame and seek counters stay absent):

- video_probe: input duration and resolution of every accepted video, refusals by code;
- video_decode (PyAV): packets sent to the decoder, sampled frames, seek vs from-start decodes;
- ensemble_average: predictions by class (videos the pipeline classified: an answer the front
  model gives from its answer cache is not counted again);
- vidcls (the front model): every request by how the answer cache answered it;
- every python step: refused or failed requests by step and error code.

A step attaches what it measured to a result under :data:`STATS` (a list of :class:`Sample`);
:class:`~vidcls.triton_models.base.BatchedModel` records it once per request answered, so the
per-request retry after a failed batch never counts a request twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple

COUNTER = "counter"
HISTOGRAM = "histogram"


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # COUNTER | HISTOGRAM
    description: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()  # histogram upper bounds (Prometheus ``le``), ascending

    def series(self) -> tuple[str, ...]:
        """The sample names a scrape shows for this metric (a histogram's _bucket/_sum/_count)."""
        if self.kind == HISTOGRAM:
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


PREDICTIONS = MetricSpec(
    "vidcls_predictions_total", COUNTER,
    "Videos classified, by predicted class (the class id CLASS_NAME returns)", ("class",))
FAILURES = MetricSpec(
    "vidcls_request_failures_total", COUNTER,
    "Requests a vidcls python step refused or failed, by step (Triton model name) and error code",
    ("step", "code"))
DECODED_PACKETS = MetricSpec(
    "vidcls_decoded_packets_total", COUNTER,
    "Packets sent to the video decoder by the PyAV decode step (seeking skips packets)")
SAMPLED_FRAMES = MetricSpec(
    "vidcls_sampled_frames_total", COUNTER,
    "Sampled frames the PyAV decode step returned (config num_frames per video)")
DECODES = MetricSpec(
    "vidcls_decodes_total", COUNTER,
    "Videos the PyAV decode step decoded, by mode: seek (GOP by GOP after seeks) or "
    "sequential (one pass from the start)", ("mode",))
INPUT_DURATION = MetricSpec(
    "vidcls_input_duration_seconds", HISTOGRAM,
    "Duration of the videos the probe accepted, in seconds",
    buckets=(5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0))
INPUT_SHORT_SIDE = MetricSpec(
    "vidcls_input_short_side_pixels", HISTOGRAM,
    "Resolution of the videos the probe accepted: the shorter side in pixels (720 = 720p, "
    "portrait or landscape)",
    buckets=(144.0, 240.0, 360.0, 480.0, 720.0, 1080.0, 1440.0, 2160.0, 4096.0))

ANSWER_CACHE = MetricSpec(
    "vidcls_answer_cache_requests_total", COUNTER,
    "Requests to the front model by how they were answered: hit (a stored answer), joined (the "
    "answer of the same file being classified for another request), miss (the pipeline ran), "
    "off (the request turned the cache off)", ("outcome",))

ALL: tuple[MetricSpec, ...] = (PREDICTIONS, FAILURES, DECODED_PACKETS, SAMPLED_FRAMES, DECODES,
                               INPUT_DURATION, INPUT_SHORT_SIDE, ANSWER_CACHE)
# Values of DECODES' ``mode`` label: vidcls.video.decode_frames reports them in stats["mode"].
DECODE_MODES = ("seek", "sequential")
# The FAILURES code of an error that is not a VideoError (a bug, ONNX Runtime failing, ...).
INTERNAL_CODE = "internal"

# The key under which a step's result carries its samples (never sent as an output tensor).
STATS = "__vidcls_stats__"


class Sample(NamedTuple):
    spec: MetricSpec
    value: float
    labels: dict[str, str]


def sample(spec: MetricSpec, value: float = 1.0, **labels: Any) -> Sample:
    if set(labels) != set(spec.labels):
        raise ValueError(f"{spec.name} takes labels {spec.labels}, got {sorted(labels)}")
    return Sample(spec, float(value), {k: str(v) for k, v in labels.items()})


class Recorder:
    """Creates metric families and metrics on first use and records samples into them.

    ``pb`` is ``triton_python_backend_utils``; without a metrics API (outside Triton, or a server
    older than the API) recording does nothing, so the steps run the same everywhere.
    """

    def __init__(self, pb: Any = None):
        self._pb = pb if getattr(pb, "MetricFamily", None) is not None else None
        self._families: dict[str, Any] = {}
        self._metrics: dict[tuple, Any] = {}

    @property
    def enabled(self) -> bool:
        return self._pb is not None

    def record(self, samples: Iterable[Sample]) -> None:
        if self._pb is None:
            return
        for s in samples:
            metric = self._metric(s.spec, s.labels)
            if s.spec.kind == HISTOGRAM:
                metric.observe(s.value)
            else:
                metric.increment(s.value)

    def _metric(self, spec: MetricSpec, labels: dict[str, str]):
        key = (spec.name, tuple(sorted(labels.items())))
        metric = self._metrics.get(key)
        if metric is None:
            family = self._families.get(spec.name)
            if family is None:
                kinds = {COUNTER: self._pb.MetricFamily.COUNTER, HISTOGRAM: self._pb.MetricFamily.HISTOGRAM}
                family = self._pb.MetricFamily(name=spec.name, description=spec.description, kind=kinds[spec.kind])
                self._families[spec.name] = family
            if spec.kind == HISTOGRAM:
                metric = family.Metric(labels=labels, buckets=list(spec.buckets))
            else:
                metric = family.Metric(labels=labels)
            self._metrics[key] = metric
        return metric

    def close(self) -> None:
        # The python backend wants a family deleted after its metrics.
        self._metrics.clear()
        self._families.clear()
