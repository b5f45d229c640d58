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

``triton_python_backend_utils`` exists only inside the python backend stub, so it is imported in
:meth:`initialize`; the processing code (``process``) is plain numpy and testable without Triton.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vidcls.config import CONFIG_PARAMETER, REPOSITORY_CONFIG_FILE, VidclsConfig
from vidcls.video import VideoError

Batch = list[dict[str, np.ndarray]]


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
                results[i] = exc
        for slot, result in zip(slots, self.process_isolated(batch)):
            results[slot] = result
        return [self.respond(r) for r in results]

    def finalize(self) -> None:
        pass

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
        except Exception as exc:  # the batch as a whole failed: retry each request alone
            if len(batch) == 1:
                return [exc]
            out = []
            for item in batch:  # find the culprit: the others still get their answers
                try:
                    out.append(self.process([item])[0])
                except Exception as single:  # this request's own error
                    out.append(single)
            return out

    def respond(self, result: Any):
        pb = self.pb
        if isinstance(result, Exception):
            return pb.InferenceResponse(error=self.to_error(result))
        tensors = [pb.Tensor(name, np.ascontiguousarray(value, dtype=self.output_dtypes.get(name, value.dtype)))
                   for name, value in result.items()]
        return pb.InferenceResponse(output_tensors=tensors)

    def to_error(self, exc: Exception):
        pb = self.pb
        if isinstance(exc, VideoError):
            return pb.TritonError(f"{exc.code}: {exc.message}", pb.TritonError.INVALID_ARG)
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return pb.TritonError(f"internal: {self.model_name} failed: {detail}", pb.TritonError.INTERNAL)


def rows(array: np.ndarray) -> list[np.ndarray]:
    """A request's tensor split along its batch dimension."""
    return [array[i] for i in range(array.shape[0])]
