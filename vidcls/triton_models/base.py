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
- only :class:`Exception` is caught: ``KeyboardInterrupt`` and ``SystemExit`` (the stub shutting
  down) pass through instead of being answered as a request's error.
- an error is kept as text (:class:`Failure`), never as the exception: a caught exception's
  traceback holds the frames that held the request's input array, often in a reference cycle
  (the frame that caught it keeps it in a local list), and Python's cycle collector runs by object
  counts, not bytes. Each refused upload then kept its bytes in the python backend's shared-memory
  region until some later collection, and the region grew by about one upload per refusal.
  :func:`failure` reads the message and clears those frames at once.

Metrics (:mod:`vidcls.triton_models.metrics`): every request answered with an error is counted
under this model and its code; a result may carry samples of its own under ``metrics.STATS``,
recorded once per answered request (never twice when a failed batch is retried request by request).

``triton_python_backend_utils`` exists only inside the python backend stub, so it is imported in
:meth:`initialize`; the processing code (``process``) is plain numpy and testable without Triton.
"""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vidcls.config import CONFIG_PARAMETER, REPOSITORY_CONFIG_FILE, VidclsConfig
from vidcls.triton_models import metrics
from vidcls.video import VideoError

Batch = list[dict[str, np.ndarray]]


@dataclass(frozen=True)
class Failure:
    """A request's error as the client will read it; holds no reference to the request."""

    message: str
    invalid_input: bool  # True: the input's fault (INVALID_ARG); False: ours (INTERNAL)
    code: str  # what the failure is counted under: a VideoError's code, else metrics.INTERNAL_CODE


def failure(exc: BaseException, model_name: str) -> Failure:
    """The :class:`Failure` for ``exc``, after releasing what ``exc`` keeps alive (see the module
    docstring): the locals of every frame in its traceback and in the exceptions chained to it."""
    if isinstance(exc, VideoError):
        result = Failure(f"{exc.code}: {exc.message}", True, exc.code)
    else:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        result = Failure(f"internal: {model_name} failed: {detail}", False, metrics.INTERNAL_CODE)
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)  # skips frames still running
        chained = exc.__context__ or exc.__cause__
        exc.__traceback__ = exc.__context__ = exc.__cause__ = None
        exc = chained
    return result


def load_config(model_dir: str | Path, parameters: dict[str, Any]) -> VidclsConfig:
    """The VidclsConfig named by the model's ``vidcls_config`` parameter (default: repo root file)."""
    rel = parameters.get(CONFIG_PARAMETER, {}).get("string_value") or f"../{REPOSITORY_CONFIG_FILE}"
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
            except Exception as exc:  # becomes this request's error response
                results[i] = failure(exc, self.model_name)
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
        """:meth:`process` with every exception (returned or raised) turned into a :class:`Failure`."""
        if not batch:
            return []
        try:
            results = self.process(batch)
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for {len(batch)} requests")
        except Exception as exc:  # the batch as a whole failed: retry each request alone
            if len(batch) == 1:
                return [failure(exc, self.model_name)]
            results = []
            for item in batch:  # find the culprit: the others still get their answers
                try:
                    results.append(self.process([item])[0])
                except Exception as single:  # this request's own error
                    results.append(failure(single, self.model_name))
        return [failure(r, self.model_name) if isinstance(r, BaseException) else r for r in results]

    def account(self, result: Any) -> None:
        """Record the custom metrics of one answered request (and take its samples off the result)."""
        if isinstance(result, Failure):
            self.metrics.record([metrics.sample(metrics.FAILURES, step=self.model_name, code=result.code)])
        elif isinstance(result, dict):
            self.metrics.record(result.pop(metrics.STATS, ()))

    def respond(self, result: Any):
        pb = self.pb
        if isinstance(result, Failure):
            code = pb.TritonError.INVALID_ARG if result.invalid_input else pb.TritonError.INTERNAL
            return pb.InferenceResponse(error=pb.TritonError(result.message, code))
        tensors = [pb.Tensor(name, np.ascontiguousarray(value, dtype=self.output_dtypes.get(name, value.dtype)))
                   for name, value in result.items()]
        return pb.InferenceResponse(output_tensors=tensors)


def rows(array: np.ndarray) -> list[np.ndarray]:
    """A request's tensor split along its batch dimension."""
    return [array[i] for i in range(array.shape[0])]
