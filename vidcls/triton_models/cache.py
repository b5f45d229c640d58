"""The model clients call (``serving.ensemble``): answers a file seen before from the answer cache,
and sends every other one through the pipeline ensemble (``serving.pipeline``).

VIDEO UINT8 [nbytes] → PROBABILITIES [C] (labels file: Triton's classification extension) and
CLASS_NAME [1], exactly what the pipeline answers. Per request: the SHA-256 content key
(:func:`vidcls.answer_cache.content_key`); a stored answer is sent at once; a file being
classified right now for another request waits for that answer; anything else is one inference of
the pipeline ensemble (Triton's business logic scripting, BLS) and its answer is stored.
The steps' errors are passed on with their message and code (:class:`PipelineError`) and never stored. A request with the parameter
``serving.cache_parameter`` set to false skips the cache both ways.

execute() is a coroutine, which the python backend runs on the stub's own event loop: it starts
one task per pipeline inference (``InferenceRequest.async_exec``) and returns, and the loop runs
the tasks on; each answer goes out through its request's response sender. So one instance of this
model keeps as many videos in flight as clients send, while the pipeline's own models batch and
queue them, and a stored answer goes out at once even while pipeline runs are in flight. (An
earlier version waited on the pipeline from a thread pool: with BLS calls made from its threads
the stub crashed with a segmentation fault every time it exited, after Triton had unloaded it.)
"""

from __future__ import annotations

import asyncio
import json
import re

from vidcls.answer_cache import AnswerCache, content_key
from vidcls.triton_models import metrics
from vidcls.triton_models.base import BatchedModel, Failure, failure

class PipelineError(Exception):
    """The pipeline's error for a request, passed on as the steps gave it.

    A BLS response carries the ensemble's message (``in ensemble '<pipeline>', <step's message>``)
    but not its code (it arrives as INTERNAL), so both are taken back from the step's message: a
    vidcls.video.VideoError reads ``<code>: <message>`` and was INVALID_ARG; a step's unexpected
    failure reads ``internal: ...`` (vidcls.triton_models.base). Anything else stays INTERNAL.
    """

    def __init__(self, message: str, pipeline: str):
        prefix = f"in ensemble '{pipeline}', "
        message = message[len(prefix):] if message.startswith(prefix) else message
        super().__init__(message)
        self.message = message
        code = re.match(r"([a-z][a-z0-9_]*): ", message)
        self.invalid_argument = bool(code) and code.group(1) != "internal"

    def as_failure(self) -> Failure:
        """The answer to send: the step's message and code (the step counted it in its metrics)."""
        return Failure(self.message, self.invalid_argument, "")


def wants_cache(parameters: str | dict | None, name: str) -> bool:
    """False when the request's parameters set ``name`` to false (bool, 0 or "false"/"no"/"off")."""
    if isinstance(parameters, str):
        parameters = json.loads(parameters or "{}")
    value = (parameters or {}).get(name, True)
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "off")
    return bool(value)


class AnswerCacheModel(BatchedModel):
    def setup(self) -> None:
        s = self.config.serving
        self.inputs = (s.video,)
        self.cache = AnswerCache(s.answer_cache_entries)
        self.running: set[asyncio.Task] = set()

    async def execute(self, requests):
        s = self.config.serving
        pending = []
        for request in requests:
            sender = request.get_response_sender()
            try:
                video = self.pb.get_input_tensor_by_name(request, s.video)
                if video is None:
                    self.read_inputs(request)  # raises the usual missing_input error
                use_cache = wants_cache(request.parameters(), s.cache_parameter)
                key = content_key(video.as_numpy()) if use_cache else None
            except Exception as exc:  # this request's error
                self.send(sender, exc)
                continue
            if key is None:
                self.count("off")
                pending.append(self.classify(video, sender, None))
                continue
            answer, owner = self.cache.lookup(key, lambda result, sender=sender: self.send(sender, result))
            self.count("hit" if answer is not None else "miss" if owner else "joined")
            if answer is not None:
                self.send(sender, answer)
            elif owner:
                pending.append(self.classify(video, sender, key))
        for work in pending:  # run on after this returns; the answers go out through the senders
            task = asyncio.ensure_future(work)
            self.running.add(task)  # a task nothing refers to may be collected before it ends
            task.add_done_callback(self.running.discard)
        return None

    def count(self, outcome: str) -> None:
        self.metrics.record([metrics.sample(metrics.ANSWER_CACHE, outcome=outcome)])

    async def classify(self, video, sender, key) -> None:
        """One pipeline inference; the answer goes to ``sender``, and to the cache (which hands it to
        the requests for the same file that arrived meanwhile) unless ``key`` is None."""
        s = self.config.serving
        try:
            # Every output (evidence included: it costs the pipeline nothing more), so one stored
            # answer serves any request; Triton returns each client only the outputs it names.
            request = self.pb.InferenceRequest(model_name=s.pipeline, inputs=[video],
                                               requested_output_names=list(self.output_dtypes))
            response = await request.async_exec()
            if response.has_error():
                result = PipelineError(response.error().message(), s.pipeline)
            else:
                # Copies: the response's tensors live in shared memory that is reused after it.
                result = {name: self.pb.get_output_tensor_by_name(response, name).as_numpy().copy()
                          for name in self.output_dtypes}
        except Exception as exc:  # becomes the requests' error
            result = exc
        if key is not None:
            self.cache.finish(key, result)
        self.send(sender, result)

    def send(self, sender, result) -> None:
        if isinstance(result, PipelineError):
            result = result.as_failure()
        elif isinstance(result, BaseException):  # this model's own error: counted under its name
            result = failure(result, self.model_name)
            self.account(result)
        sender.send(self.respond(result), flags=self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
