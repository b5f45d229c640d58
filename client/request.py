"""One inference of the vidcls ensemble over gRPC (tritonclient.grpc.aio), and what its
failures mean.

Failures fall in three kinds that the retry loop treats differently:
``transient`` (server unreachable, restarting, overloaded: retry with backoff, fail over),
``timeout`` (our deadline passed: recorded, not retried, the server may still be working on it)
and ``rejected`` (the server answered with an error about this input: recorded with the server's
message, never retried).
"""

from __future__ import annotations

import itertools
import json
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from vidcls import admin_access
from vidcls.client import evidence
from vidcls.config import VidclsConfig

TRANSIENT_CODES = {"StatusCode.UNAVAILABLE", "StatusCode.CANCELLED"}
TIMEOUT_CODES = {"StatusCode.DEADLINE_EXCEEDED"}
# Every other code is ambiguous: a stopping or restarting server answers with INTERNAL errors or
# "unknown model ... has no available versions" while it unloads, not only with UNAVAILABLE. So
# an error counts as the input's fault only if the endpoint is healthy right after it.

# gRPC's own reconnect backoff grows to 120 s; a client that must survive a server restart of a
# few seconds reconnects faster than that.
RECONNECT_ARGS = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
]

_region_ids = itertools.count()


@dataclass(frozen=True)
class RequestOptions:
    config: VidclsConfig
    model: str
    model_version: str = ""
    timeout: float | None = None
    shm: bool = False
    top_k: int = 0
    evidence: int = 0  # > 0: also ask for the evidence outputs, keep this many top moments
    answer_cache: bool = True  # False: ask the server to classify the file anew
    admin_key: str | None = None  # the operator key: registering shared memory needs it (vidcls.admin_access)


@dataclass(frozen=True)
class TLSOptions:
    ssl: bool = False
    root_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    def __post_init__(self) -> None:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("--client-cert and --client-key go together")
        for p in (self.root_cert, self.client_cert, self.client_key):
            if p is not None and not os.path.isfile(p):
                raise ValueError(f"TLS file {p} does not exist")


@dataclass
class Prediction:
    class_name: str
    probabilities: dict[str, float]
    top_k: list[dict[str, Any]] | None = None
    evidence: dict[str, Any] | None = None  # vidcls.client.evidence.from_result


class RequestError(Exception):
    def __init__(self, kind: str, message: str, status: str = ""):
        super().__init__(message)
        self.kind, self.message, self.status = kind, message, status


def make_client(url: str, tls: TLSOptions):
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as aioclient

    ka = grpcclient.KeepAliveOptions()
    args = [
        ("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", ka.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", ka.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", ka.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", ka.http2_max_pings_without_data),
        *RECONNECT_ARGS,
    ]
    return aioclient.InferenceServerClient(
        url, ssl=tls.ssl, root_certificates=tls.root_cert, private_key=tls.client_key,
        certificate_chain=tls.client_cert, channel_args=args)


def error_kind(exc: BaseException) -> tuple[str, str, str]:
    """(kind, message, status) for a failed attempt; kind ``ambiguous`` needs a health check."""
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, RequestError):
        return exc.kind, exc.message, exc.status
    if isinstance(exc, InferenceServerException):
        status = str(exc.status() or "")
        msg = exc.message() or str(exc)
        if admin_access.refused(msg):  # UNAVAILABLE, but no retry brings the key
            return "rejected", admin_access.refusal("a call for the server's operator"), status
        if status in TRANSIENT_CODES:
            return "transient", msg, status
        if status in TIMEOUT_CODES:
            return "timeout", f"timeout: {msg}", status
        return "ambiguous", msg, status
    return "rejected", f"{type(exc).__name__}: {exc}", ""


async def endpoint_healthy(client, model: str, version: str, timeout: float = 3.0) -> bool:
    """Whether the server and the model answer 'ready' (a failure on a healthy server is the input's)."""
    try:
        return bool(await client.is_server_ready(client_timeout=timeout)) and bool(
            await client.is_model_ready(model, version, client_timeout=timeout))
    except Exception:
        return False


async def server_problem(client, timeout: float = 5.0) -> str | None:
    """None when a Triton server answers at the client's address (live; its models may still
    load), else why not, short (e.g. "Connection refused", a TLS handshake that failed)."""
    try:
        if await client.is_server_live(client_timeout=timeout):
            return None
        return "the server is not live"
    except Exception as exc:
        text = str(exc)
        text = text.split("] ", 1)[1] if text.startswith("[StatusCode.") and "] " in text else text
        text = re.sub(r"^([A-Z_]+: )?(ipv[46]:\S+: )?", "", text.rsplit("last error: ", 1)[-1])
        return " ".join(text.split())[:160] or type(exc).__name__


async def served_classes(client, model: str, version: str, parameter: str,
                         timeout: float = 5.0) -> tuple[str, ...] | None:
    """The class names the served ensemble declares (its config's ``parameter``), or None when it
    declares none (a repository from an older export) or cannot be asked."""
    try:
        answer = await client.get_model_config(model, version, as_json=True, client_timeout=timeout)
        text = answer["config"]["parameters"][parameter]["string_value"]
        names = json.loads(text)
    except Exception:
        return None
    return tuple(str(n) for n in names) if isinstance(names, list) and names else None


async def model_missing(client, model: str, version: str, timeout: float = 5.0) -> bool | None:
    """True when the server is ready but does not serve ``model`` (a wrong name or version: no
    retry can fix that); None when the server cannot tell (unreachable or still starting)."""
    try:
        if not await client.is_server_ready(client_timeout=timeout):
            return None
        return not await client.is_model_ready(model, version, client_timeout=timeout)
    except Exception:
        return None


async def served_limits(client, model: str, version: str, parameter: str, timeout: float = 5.0):
    """The :class:`~vidcls.config.InputLimits` the server enforces, from the model's config
    parameter ``parameter`` (the ensemble publishes them); None when it publishes none or cannot
    be asked (then the server alone decides)."""
    import json

    from vidcls.config import InputLimits

    try:
        answer = await client.get_model_config(model, version, as_json=True, client_timeout=timeout)
        text = answer.get("config", {}).get("parameters", {}).get(parameter, {}).get("string_value")
        return InputLimits.from_dict(json.loads(text)) if text else None
    except Exception:  # no limits known: nothing is refused locally
        return None


UNREGISTER_TIMEOUT_S = 60.0


class _ShmRegion:
    """A system shared-memory region holding one file's bytes, registered with one server for the
    duration of one request (a restarted server forgets registrations, so none outlives it)."""

    def __init__(self, client, data: bytes, key: str | None = None):
        from tritonclient.utils import shared_memory as shm

        self._shm, self._client = shm, client
        self._headers = admin_access.grpc_headers(key)
        n = next(_region_ids)
        self.name = f"vidcls_{os.getpid()}_{n}_{os.urandom(3).hex()}"
        self.size = max(1, len(data))
        self._handle = shm.create_shared_memory_region(self.name, f"/{self.name}", self.size, create_only=True)
        self._registered = False
        if data:
            shm.set_shared_memory_region(self._handle, [np.frombuffer(data, dtype=np.uint8)])

    async def register(self) -> None:
        # Marked first: a call that fails on our side (a deadline, a cancelled task) may still have
        # registered the region on the server, and release() must then unregister it.
        self._registered = True
        await self._client.register_system_shared_memory(self.name, f"/{self.name}", self.size,
                                                         headers=self._headers)

    async def release(self) -> None:
        try:
            if self._registered:
                # A busy server can take seconds to answer: a short deadline here left regions
                # registered (and their names held) on a loaded machine.
                await self._client.unregister_system_shared_memory(self.name, headers=self._headers,
                                                                   client_timeout=UNREGISTER_TIMEOUT_S)
        except Exception:
            pass  # the server went away (it forgot the region already) or never had it
        finally:
            self._shm.destroy_shared_memory_region(self._handle)


def parse_top_k(values, classes: tuple[str, ...]) -> list[dict[str, Any]]:
    """Classification-extension strings ``score:index[:label]`` → [{class, index, score, label}]."""
    out = []
    for v in np.asarray(values).reshape(-1):
        text = v.decode() if isinstance(v, bytes) else str(v)
        parts = text.split(":", 2)
        index = int(parts[1])
        out.append({"class": classes[index], "index": index, "score": float(parts[0]),
                    "label": parts[2] if len(parts) > 2 else classes[index]})
    return out


async def infer_video(client, data: bytes, opts: RequestOptions) -> Prediction:
    """Send one encoded video; return the ensemble's class and probabilities."""
    import tritonclient.grpc as grpcclient

    s = opts.config.serving
    classes = opts.config.classes
    video = grpcclient.InferInput(s.video, [1, len(data)], "UINT8")
    region = None
    try:
        if opts.shm:
            region = _ShmRegion(client, data, opts.admin_key)
            await region.register()
            video.set_shared_memory(region.name, len(data))
        else:
            video.set_data_from_numpy(np.frombuffer(data, dtype=np.uint8).reshape(1, -1))
        # With --top-k the scores come through the classification extension: asking it for every
        # class gives the full distribution (6 decimals, Triton's formatting) and the ranking.
        outputs = [grpcclient.InferRequestedOutput(s.probabilities, class_count=len(classes) if opts.top_k else 0),
                   grpcclient.InferRequestedOutput(s.class_name)]
        if opts.evidence:
            outputs += [grpcclient.InferRequestedOutput(n) for n in evidence.output_names(opts.config)]
        parameters = None if opts.answer_cache else {s.cache_parameter: False}
        result = await client.infer(opts.model, [video], model_version=opts.model_version, outputs=outputs,
                                    client_timeout=opts.timeout, parameters=parameters)
    except Exception as exc:
        if region is not None and "shared memory" in str(exc).lower() and not admin_access.refused(exc):
            # A server restarted between register and infer forgets the region: try again.
            raise RequestError("transient", str(exc)) from exc
        raise
    finally:
        if region is not None:
            await region.release()
    names = result.as_numpy(s.class_name)
    class_name = names.reshape(-1)[0] if names is not None and names.size else None
    if isinstance(class_name, bytes):
        class_name = class_name.decode()
    if opts.top_k:
        ranked = parse_top_k(result.as_numpy(s.probabilities), classes)
        probs = {c: 0.0 for c in classes}
        probs.update({e["class"]: e["score"] for e in ranked})
        top = [{"class": e["class"], "score": e["score"]} for e in ranked[: opts.top_k]]
    else:
        arr = result.as_numpy(s.probabilities).reshape(-1)
        if arr.size != len(classes):
            raise RequestError("rejected", f"{s.probabilities} has {arr.size} values, expected {len(classes)}")
        probs = {c: float(p) for c, p in zip(classes, arr)}
        top = None
    if class_name is None:
        class_name = max(probs, key=probs.get)
    found = evidence.from_result(result, opts.config, opts.evidence) if opts.evidence else None
    return Prediction(str(class_name), probs, top, found)
