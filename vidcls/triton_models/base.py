"""What every vidcls python-backend model shares: config loading, batching, per-request errors.

A Triton python model receives the whole list of requests the dynamic batcher formed in one
``execute()``. :class:`BatchedModel` reads their inputs, hands the list to :meth:`process` (which
works on the batch as a whole: one ONNX Runtime run for all requests' frames, ...) and turns each
result into a response. Isolation rules:

- a request whose result is an exception gets an error response; the others are answered normally;
- if :meth:`process` raises for the batch as a whole, every request is retried alone, so one bad
  request never fails the requests it was batched with;
- a :class:`vidcls.video.VideoError` becomes ``INVALID_ARG`` with the message ``"<code>: <message>"``
  (the client reports the code); anything else becomes ``INTERNAL`` naming the model.

Metrics (:mod:`vidcls.triton_models.metrics`): every request answered with an error is counted
under this model and its code; a result may carry samples of its own under ``metrics.STATS``,
recorded once per answered request (never twice when a failed batch is retried request by request).

``triton_python_backend_utils`` exists only inside the python backend stub, so it is imported in
:meth:`initialize`; the processing code (``process``) is plain numpy and testable without Triton.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vidcls.config import VidclsConfig
from vidcls.triton_models import metrics
from vidcls.video import VideoError

# The config.pbtxt parameter naming the VidclsConfig JSON, relative to the model's folder.
CONFIG_PARAMETER = "vidcls_config"
CONFIG_FILENAME = "vidcls_config.json"

Batch = list[dict[str, np.ndarray]]
Result = "dict[str, np.ndarray] | BaseException"


def load_config(model_dir: str | Path, parameters: dict[str, Any]) -> VidclsConfig:
    """The VidclsConfig named by the model's ``vidcls_config`` parameter (default: repo root file)."""
    rel = parameters.get(CONFIG_PARAMETER, {}).get("string_value") or f"../{CONFIG_FILENAME}"
    return VidclsConfig.load(Path(model_dir) / rel)


class BatchedModel:
    """Base of the vidcls python models; subclasses define the tensor names and :meth:`process`."""

    inputs: Sequence[str] = ()

    # ---- Triton entry points -----------------------------------------------------------------
    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        self.model_config = json.loads(args["model_config"])
        self.model_name = args["model_name"]
        # args["model_repository"] is this model's folder; weights sit in its version folder.
        self.model_dir = Path(args["model_repository"])
        self.version_dir = self.model_dir / str(args["model_version"])
        self.config = load_config(self.model_dir, self.model_config.get("parameters", {}))
        self.output_dtypes = {
            o["name"]: pb_utils.triton_string_to_numpy(o["data_type"]) for o in self.model_config["output"]
        }
        self.metrics = metrics.Recorder(pb_utils)
        self.setup()

    def execute(self, requests):
        batch: Batch = []
        slots: list[int] = []
        results: list[Any] = [None] * len(requests)
        for i, request in enumerate(requests):
            try:
                batch.append(self.read_inputs(request))
                slots.append(i)
            except BaseException as exc:  # noqa: BLE001 - must become this request's error
                results[i] = exc
        for slot, result in zip(slots, self.process_isolated(batch)):
            results[slot] = result
        for result in results:
            self.account(result)
        return [self.respond(r) for r in results]

    def finalize(self) -> None:
        self.metrics.close()

    # ---- subclass hooks ----------------------------------------------------------------------
    def setup(self) -> None:
        """Load sessions etc. (self.config, self.version_dir are set)."""

    def process(self, batch: Batch) -> list[Any]:
        """One result per request: a dict output name → array (leading batch dim), or an exception."""
        raise NotImplementedError

    # ---- helpers -----------------------------------------------------------------------------
    def read_inputs(self, request) -> dict[str, np.ndarray]:
        out = {}
        for name in self.inputs:
            tensor = self.pb.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise VideoError("missing_input", f"the request has no input {name!r}")
            out[name] = tensor.as_numpy()
        return out

    def process_isolated(self, batch: Batch) -> list[Any]:
        if not batch:
            return []
        try:
            results = self.process(batch)
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for {len(batch)} requests")
            return results
        except BaseException as exc:  # noqa: BLE001
            if len(batch) == 1:
                return [exc]
            out = []
            for item in batch:  # find the culprit: the others still get their answers
                try:
                    out.append(self.process([item])[0])
                except BaseException as single:  # noqa: BLE001
                    out.append(single)
            return out

    def account(self, result: Any) -> None:
        """Record the custom metrics of one answered request (and take its samples off the result)."""
        if isinstance(result, BaseException):
            self.metrics.record([metrics.sample(metrics.FAILURES, step=self.model_name, code=error_code(result))])
        elif isinstance(result, dict):
            self.metrics.record(result.pop(metrics.STATS, ()))

    def respond(self, result: Any):
        pb = self.pb
        if isinstance(result, BaseException):
            return pb.InferenceResponse(error=self.to_error(result))
        tensors = [pb.Tensor(name, np.ascontiguousarray(value, dtype=self.output_dtypes.get(name, value.dtype)))
                   for name, value in result.items()]
        return pb.InferenceResponse(output_tensors=tensors)

    def to_error(self, exc: BaseException):
        pb = self.pb
        if isinstance(exc, VideoError):
            return pb.TritonError(f"{exc.code}: {exc.message}", pb.TritonError.INVALID_ARG)
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return pb.TritonError(f"internal: {self.model_name} failed: {detail}", pb.TritonError.INTERNAL)


def error_code(exc: BaseException) -> str:
    """The code a failed request is counted under: a VideoError's own, else ``internal``."""
    return exc.code if isinstance(exc, VideoError) else metrics.INTERNAL_CODE


def rows(array: np.ndarray) -> list[np.ndarray]:
    """A request's tensor split along its batch dimension."""
    return [array[i] for i in range(array.shape[0])]


def chunked_run(session, input_name: str, data: np.ndarray, chunk: int, outputs: Sequence[str] | None = None):
    """``session`` over ``data`` in chunks of at most ``chunk`` rows along axis 0, concatenated:
    the first output, or with ``outputs`` (names) a list of those outputs."""
    chunk = max(1, int(chunk))
    runs = [session.run(None if outputs is None else list(outputs), {input_name: data[i:i + chunk]})
            for i in range(0, len(data), chunk)]
    joined = [parts[0] if len(parts) == 1 else np.concatenate(parts) for parts in zip(*runs)]
    return joined[0] if outputs is None else joined
