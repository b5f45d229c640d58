"""``vidcls classify PATHS... --url HOST:PORT``: batch classification over gRPC to CSV/JSONL.

Files are sent to the Triton ensemble with bounded concurrency (asyncio, tritonclient.grpc.aio).
Every file found gets a row: a result, an error, or ``skipped`` with the reason (a file in a
folder that is not a video by :mod:`vidcls.inputs`' rule). The client reads the input limits the
server publishes (the ensemble's ``limits_parameter``): a folder's files are picked as the
server's probe would take them, and a file over ``max_bytes`` (or empty) is refused with the
server's error code without being read or sent. At most ``max_inflight_bytes`` of file contents
are held at once (a bigger file goes alone), whatever ``--concurrency`` is.
Each result is written and flushed as it arrives, so a killed run loses nothing it finished and
``--resume`` continues it without classifying a file twice. A file the server rejects is recorded
with the server's message and the run goes on; transient failures (server down or restarting)
are retried with exponential backoff and, with several ``--url`` values, fail over to another
endpoint. The exit code is non-zero when any file in the output failed.

Python API (the demo uses it)::

    summary = classify_paths(["videos/"], "127.0.0.1:8001", output="results.csv")
    summary.records   # one dict per file, the same fields as the output
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

from vidcls import admin_access
from vidcls.arguments import check_address
from vidcls.client.evidence import DEFAULT_MOMENTS
from vidcls.client.fleet import POLICIES, Fleet
from vidcls.client.request import (RequestOptions, TLSOptions, endpoint_healthy, error_kind, infer_video,
                                   make_client, model_missing, served_classes, served_limits, server_problem)
from vidcls.client.results import (ResultWriter, detect_format, drop_records, fieldnames, load_done,
                                   written_classes)
from vidcls.config import InputLimits, VidclsConfig
from vidcls.errors import UsageError, VidclsError
from vidcls.inputs import discover, path_key
from vidcls.launcher import DEFAULT_PORTS
from vidcls.video import VideoError, check_size

log = logging.getLogger(__name__)

# Where `vidcls serve` listens by default (Triton's usual gRPC port).
DEFAULT_URL = f"127.0.0.1:{DEFAULT_PORTS['grpc']}"
# File contents held in memory at once, all requests in flight together (a request's serialized
# copies come on top, about twice more).
DEFAULT_MAX_INFLIGHT_BYTES = 1024 * 1024 * 1024


@dataclass
class ClassifyOptions:
    urls: Sequence[str] = (DEFAULT_URL,)
    output: str | None = None  # None: keep records in memory only; "-": stdout
    fmt: str = "auto"
    concurrency: int = 4
    retries: int = 20
    retry_timeout: float = 120.0  # seconds of outage of the whole fleet before files are given up
    backoff: float = 0.5
    backoff_max: float = 8.0
    policy: str = "least-outstanding"
    resume: bool = False
    retry_failed: bool = False
    overwrite: bool = False
    progress: bool = True
    tls: TLSOptions = field(default_factory=TLSOptions)
    config: VidclsConfig = field(default_factory=VidclsConfig)
    model: str | None = None
    model_version: str = ""
    timeout: float | None = 300.0
    shm: bool = False
    top_k: int = 0
    # Before the run: how long to wait for a server to answer at one of the urls. 0 = ask once and
    # fail within seconds when none answers (a wrong --url, a server not started); None = no
    # check, the retry budget above decides (for callers that start a server alongside).
    wait_for_server: float | None = 0.0
    max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES
    evidence: int = 0  # > 0: record the evidence (this many top moments per video)
    answer_cache: bool = True
    admin_key: str | None = None  # the operator key (--shm registers regions: vidcls.admin_access)

    def request_options(self) -> RequestOptions:
        return RequestOptions(config=self.config, model=self.model or self.config.serving.ensemble,
                              model_version=self.model_version, timeout=self.timeout, shm=self.shm,
                              top_k=self.top_k, evidence=self.evidence, answer_cache=self.answer_cache,
                              admin_key=self.admin_key)


@dataclass
class Summary:
    total: int = 0  # files found
    resumed: int = 0  # already in the output (--resume)
    skipped: int = 0  # not sent: not videos (a row with the reason)
    classified: int = 0
    failed: int = 0
    previously_failed: int = 0  # failed records kept from an earlier run
    retries: int = 0
    elapsed_s: float = 0.0
    per_class: Counter = field(default_factory=Counter)
    per_endpoint: dict[str, int] = field(default_factory=dict)
    errors: list[tuple[str, str]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    output: str | None = None

    @property
    def throughput(self) -> float:
        done = self.classified + self.failed
        return done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def exit_code(self) -> int:
        return 1 if (self.failed or self.previously_failed) else 0

    def format(self, max_errors: int = 10) -> str:
        lines = [f"classified {self.classified}, failed {self.failed}, skipped (not videos) {self.skipped}, "
                 f"already in output {self.resumed} of {self.total} files in {self.elapsed_s:.1f} s "
                 f"({self.throughput:.2f} videos/s, {self.retries} retries)"]
        if self.per_class:
            lines.append("per class: " + ", ".join(f"{c} {n}" for c, n in sorted(self.per_class.items())))
        if len(self.per_endpoint) > 1:
            lines.append("per endpoint: " + ", ".join(f"{u} {n}" for u, n in self.per_endpoint.items()))
        if self.previously_failed:
            lines.append(f"{self.previously_failed} failed record(s) from an earlier run kept "
                         "(--retry-failed tries them again)")
        for path, msg in self.errors[:max_errors]:
            lines.append(f"  error {path}: {msg}")
        if len(self.errors) > max_errors:
            lines.append(f"  ... and {len(self.errors) - max_errors} more errors (see the output)")
        if self.output and self.output != "-":
            lines.append(f"results: {self.output}")
        return "\n".join(lines)


class ServerUnreachable(VidclsError):
    """No server answers at any of the urls before the run (exit code 1)."""


def resolve_output(output: str | None, fmt: str) -> tuple[str | None, str]:
    """A folder as --output means results.<format> inside it; returns (file, format)."""
    if output and output != "-" and (os.path.isdir(output) or output.endswith(os.sep)):
        fmt = detect_format(None, fmt)
        return os.path.join(output, f"results.{fmt}"), fmt
    return output, detect_format(output, fmt)


async def _read(path: str) -> bytes:
    return await asyncio.to_thread(Path(path).read_bytes)


class ByteBudget:
    """Admits files while their bytes together stay within ``limit``; a file bigger than the limit
    is admitted alone. Keeps a folder of large files from filling the client's memory."""

    def __init__(self, limit: int):
        self.limit = max(1, int(limit))
        self.used = 0
        self.peak = 0
        self._cond = asyncio.Condition()

    async def acquire(self, size: int) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.used == 0 or self.used + size <= self.limit)
            self.used += size
            self.peak = max(self.peak, self.used)

    async def release(self, size: int) -> None:
        async with self._cond:
            self.used -= size
            self._cond.notify_all()


def _record(path: str, opts: ClassifyOptions) -> dict[str, Any]:
    # The output's columns, in their order (JSONL keys as CSV columns); None until answered.
    record: dict[str, Any] = dict.fromkeys(fieldnames(opts.config.classes, bool(opts.top_k), bool(opts.evidence)))
    record.update({"path": path, "class": "", "error": "", "skipped": "", "attempts": 0, "endpoint": ""})
    return record


async def _classify_one(path: str, fleet: Fleet, opts: ClassifyOptions, req: RequestOptions,
                        limits: InputLimits | None, budget: ByteBudget) -> dict[str, Any]:
    record = _record(path, opts)
    try:
        size = os.stat(path).st_size
        if limits is not None:
            check_size(size, limits)  # the server's own check, before a byte is read
    except OSError as exc:
        record["error"] = f"unreadable: {exc.strerror or exc}"
        return record
    except VideoError as exc:
        record["error"] = f"{exc}; refused by the client before sending (the server's limit)"
        return record
    await budget.acquire(size)
    try:
        return await _send(path, record, fleet, opts, req)
    finally:
        await budget.release(size)


async def _send(path: str, record: dict[str, Any], fleet: Fleet, opts: ClassifyOptions,
                req: RequestOptions) -> dict[str, Any]:
    try:
        data = await _read(path)
    except OSError as exc:
        record["error"] = f"unreadable: {exc.strerror or exc}"
        return record
    tried: list = []
    backoffs = 0
    while True:
        ep = fleet.pick(exclude=tried)
        record["attempts"] += 1
        record["endpoint"] = ep.url
        ep.outstanding += 1
        ep.sent += 1
        t0 = time.perf_counter()
        try:
            pred = await infer_video(ep.client, data, req)
        except Exception as exc:  # every failure becomes a record or a retry
            kind, msg, status = error_kind(exc)
            if kind == "ambiguous":
                # An error from a healthy server is about this input; from a dying one, it is not.
                kind = "rejected" if await endpoint_healthy(ep.client, req.model, req.model_version) else "transient"
        else:
            fleet.succeeded(ep)
            record.update({"class": pred.class_name, **pred.probabilities,
                           "latency_ms": round((time.perf_counter() - t0) * 1000.0, 3)})
            if opts.top_k:
                record["top_k"] = pred.top_k
            if opts.evidence:
                record.update(pred.evidence)
            return record
        finally:
            ep.outstanding -= 1
        record["latency_ms"] = round((time.perf_counter() - t0) * 1000.0, 3)
        if kind != "transient":
            record["error"] = msg
            return record
        fleet.failed(ep)
        # The time budget is the fleet's outage, not this file's: once every endpoint has been
        # failing for retry_timeout, the remaining files give up at once instead of each waiting.
        outage = fleet.outage_s()
        if record["attempts"] > opts.retries or outage > opts.retry_timeout:
            record["error"] = f"unavailable after {record['attempts']} attempts ({outage:.0f} s outage): {msg}"
            return record
        tried.append(ep)
        if fleet.has_other_up(tried):
            continue  # fail over at once
        tried.clear()
        delay = min(opts.backoff_max, opts.backoff * 2 ** min(backoffs, 16)) * random.uniform(0.5, 1.0)
        backoffs += 1
        await asyncio.sleep(delay)


async def classify_async(paths: Iterable[str], opts: ClassifyOptions, list_files: Iterable[str] = ()) -> Summary:
    if opts.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    if opts.top_k < 0 or opts.top_k > opts.config.num_classes:
        raise UsageError(f"--top-k must be between 0 and {opts.config.num_classes}")
    for url in opts.urls:
        try:
            check_address(url)
        except ValueError as exc:
            raise UsageError(f"--url {exc}") from None
    paths = list(paths)
    missing = [p for p in paths if not p.startswith("@") and not os.path.exists(p)]
    missing += [p[1:] for p in paths if p.startswith("@") and not os.path.isfile(p[1:])]
    missing += [p for p in list_files if not os.path.isfile(p)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UsageError(f"{missing[0]} does not exist{more}")
    if opts.max_inflight_bytes < 1:
        raise UsageError("--max-inflight-mb must be positive")
    if opts.evidence < 0:
        raise UsageError("--evidence K needs K >= 1 (moments per video)")
    output, fmt = resolve_output(opts.output, opts.fmt)
    paths, list_files = list(paths), list(list_files)
    own = path_key(output) if output not in (None, "-") else None

    def found(limits: InputLimits) -> list[tuple[str, str | None]]:
        # Every file, with why it is not sent; never the output file itself (it may sit in the folder).
        return [(p, why) for p, why in discover(paths, list_files, limits) if p != own]

    inputs = [p for p, _ in found(opts.config.limits)]
    summary = Summary(total=len(inputs), output=output)
    if not inputs:
        raise UsageError(f"no video files in {', '.join(paths + list(list_files)) or 'the inputs'} (folders are "
                         "searched for video file extensions: .mp4, .mkv, .webm, .avi, .mov, ...)")

    header = None
    done: dict[str, dict[str, Any]] = {}
    if output not in (None, "-") and os.path.exists(output) and os.path.getsize(output) > 0:
        if not opts.resume:
            if not opts.overwrite:
                raise UsageError(f"{output} exists: --resume continues it, --overwrite replaces it")
            os.remove(output)
        else:
            try:
                done, header = load_done(output, fmt)
            except (ValueError, KeyError) as exc:
                raise UsageError(f"cannot resume {output}: {exc}") from None
            failed_before = {p for p, r in done.items() if r.get("error")}
            if opts.retry_failed and failed_before:
                drop_records(output, fmt, failed_before)
                done = {p: r for p, r in done.items() if p not in failed_before}
            wanted = set(inputs)
            summary.previously_failed = sum(1 for p in done if p in failed_before and p in wanted)
    elif opts.resume and output in (None, "-"):
        raise UsageError("--resume needs an output file")

    todo = [p for p in inputs if p not in done]
    summary.resumed = len(inputs) - len(todo)
    if not todo:
        return summary

    req = opts.request_options()
    fleet = Fleet.from_urls(opts.urls, opts.policy, lambda u: make_client(u, opts.tls))
    try:
        if opts.wait_for_server is not None:
            await _wait_for_server(fleet, opts.wait_for_server)
        await _preflight(fleet, req)
        if req.shm:
            await _check_shm_access(fleet, req)
        classes = await _classes_of(fleet, req)
        limits = await _served_limits(fleet, req, opts.config)
        if req.evidence:
            await _check_evidence_outputs(fleet, req)
    except BaseException:
        await _close(fleet)
        raise
    if classes and classes != opts.config.classes:  # a repository with its own class set
        opts = replace(opts, config=opts.config.with_classes(classes))
        req = opts.request_options()
    before = written_classes(done, header)
    if before is not None and before != tuple(opts.config.classes):
        await _close(fleet)
        raise UsageError(f"{output} was written with the classes {', '.join(before) or '(none)'}; the server "
                         f"serves {', '.join(opts.config.classes)}: write to a new output file (or --overwrite)")
    # The folders' files, picked by the limits the server enforces (its allowed containers).
    why_not = dict(found(limits or opts.config.limits))
    budget = ByteBudget(opts.max_inflight_bytes)
    writer = ResultWriter(output, fmt, fieldnames(opts.config.classes, bool(opts.top_k), bool(opts.evidence)), header) \
        if output is not None else None
    queue: asyncio.Queue[str] = asyncio.Queue()
    for p in todo:
        queue.put_nowait(p)

    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="video", file=sys.stderr, disable=not opts.progress, dynamic_ncols=True,
               smoothing=0.1)
    start = time.perf_counter()

    def finish(record: dict[str, Any]) -> None:
        # Runs on the event loop thread only: no two records interleave in the file.
        if writer is not None:
            writer.write(record)
        summary.records.append(record)
        summary.retries += max(0, record["attempts"] - 1)
        if record["skipped"]:
            summary.skipped += 1
        elif record["error"]:
            summary.failed += 1
            summary.errors.append((record["path"], record["error"]))
            bar.set_postfix(errors=summary.failed, refresh=False)
        else:
            summary.classified += 1
            summary.per_class[record["class"]] += 1
        bar.update(1)

    async def worker() -> None:
        while True:
            try:
                path = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            why = why_not.get(path)
            if why:
                record = _record(path, opts)
                record["skipped"] = why
                finish(record)
            else:
                finish(await _classify_one(path, fleet, opts, req, limits, budget))

    try:
        await asyncio.gather(*(worker() for _ in range(min(opts.concurrency, len(todo)))))
    finally:
        summary.elapsed_s = time.perf_counter() - start
        summary.per_endpoint = {ep.url: ep.ok for ep in fleet.endpoints}
        bar.close()
        if writer is not None:
            writer.close()
        await _close(fleet)
    return summary


async def _wait_for_server(fleet: Fleet, wait_s: float) -> None:
    """Until one endpoint answers (within seconds when ``wait_s`` is 0); ServerUnreachable after
    that. Files are then sent only when a server is there: a wrong --url fails at once instead of
    after every file's retry budget. Endpoints of a fleet that do not answer are named."""
    deadline = time.monotonic() + max(0.0, wait_s)
    while True:
        problems = await asyncio.gather(*(server_problem(ep.client) for ep in fleet.endpoints))
        if not all(problems):
            for ep, problem in zip(fleet.endpoints, problems):
                if problem:
                    log.warning("no server answers at %s (%s); using the others", ep.url, problem)
            return
        if time.monotonic() >= deadline:
            where = ", ".join(f"{ep.url} ({p})" for ep, p in zip(fleet.endpoints, problems))
            waited = f" within {wait_s:.0f} s" if wait_s > 0 else ""
            raise ServerUnreachable(f"no Triton server answers at {where}{waited}: start one with "
                                    "'vidcls serve REPO', or point --url at a running one (with --ssl and "
                                    "its certificates if it uses TLS; --wait-for-server SECONDS waits for one "
                                    "that is starting)")
        await asyncio.sleep(1.0)


async def _preflight(fleet: Fleet, req: RequestOptions) -> None:
    """Stop early when every reachable endpoint is ready but lacks the model: otherwise each file
    would look like a server that is still loading, and be retried."""
    answers = await asyncio.gather(*(model_missing(ep.client, req.model, req.model_version) for ep in fleet.endpoints))
    known = [a for a in answers if a is not None]
    if known and all(known):
        version = f" version {req.model_version}" if req.model_version else ""
        raise UsageError(f"model {req.model!r}{version} is not served at "
                         + ", ".join(ep.url for ep in fleet.endpoints))


async def _check_shm_access(fleet: Fleet, req: RequestOptions) -> None:
    """--shm registers a region per file: a server that keeps shared memory for its operator would
    refuse every file, so ask once before sending any."""
    for ep in fleet.endpoints:
        try:
            await ep.client.get_system_shared_memory_status(headers=admin_access.grpc_headers(req.admin_key),
                                                            client_timeout=10)
        except Exception as exc:
            if admin_access.refused(exc):
                raise UsageError(admin_access.refusal("shared memory (--shm)", ep.url, bool(req.admin_key))
                                 + ", or classify without --shm") from None


async def _classes_of(fleet: Fleet, req: RequestOptions) -> tuple[str, ...] | None:
    """The class names the servers declare (the first that answers); the output's columns."""
    parameter = req.config.serving.classes_parameter
    for ep in fleet.endpoints:
        classes = await served_classes(ep.client, req.model, req.model_version, parameter)
        if classes:
            return classes
    return None


async def _served_limits(fleet: Fleet, req: RequestOptions, config: VidclsConfig) -> InputLimits | None:
    """The input limits the first answering endpoint publishes (a fleet serves one repository)."""
    for ep in fleet.endpoints:
        limits = await served_limits(ep.client, req.model, req.model_version, config.serving.limits_parameter)
        if limits is not None:
            return limits
    return None
async def _check_evidence_outputs(fleet: Fleet, req: RequestOptions) -> None:
    """--evidence against a repository exported without the evidence outputs would fail every
    file: say so once instead."""
    from vidcls.client.evidence import output_names

    for ep in fleet.endpoints:
        try:
            meta = await ep.client.get_model_metadata(req.model, req.model_version, as_json=True, client_timeout=5)
        except Exception:  # unreachable now: the requests will tell
            continue
        missing = set(output_names(req.config)) - {o["name"] for o in meta.get("outputs", [])}
        if missing:
            raise UsageError(f"model {req.model!r} at {ep.url} has no evidence outputs ({', '.join(sorted(missing))}): "
                             "export the repository again with this version of vidcls")


async def _close(fleet: Fleet) -> None:
    for ep in fleet.endpoints:
        try:
            await ep.client.close()
        except Exception:  # closing a dead channel must not hide the result
            pass


def classify_paths(paths: Iterable[str] | str, url: str | Sequence[str] = DEFAULT_URL, output: str | None = None,
                   **options: Any) -> Summary:
    """Classify files/folders; ``url`` may be a list (a fleet). Keyword options are the fields of
    :class:`ClassifyOptions` (e.g. ``concurrency=4, config=VidclsConfig.tiny(), progress=False``)."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    urls = [url] if isinstance(url, str) else list(url)
    opts = ClassifyOptions(urls=urls, output=output, **options)
    return asyncio.run(classify_async([os.fspath(p) for p in paths], opts))


# ---- CLI ---------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = ClassifyOptions()  # the defaults are the dataclass's, stated once
    serving = d.config.serving
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="video files, folders (searched recursively for video extensions) or @LIST files")
    parser.add_argument("--list", action="append", default=[], metavar="FILE",
                        help="a file with one path per line (repeatable)")
    parser.add_argument("-u", "--url", action="append", default=argparse.SUPPRESS, metavar="HOST:PORT",
                        help=f"Triton gRPC endpoint (default: {d.urls[0]}, where 'vidcls serve' listens); "
                             "repeat or comma-separate for a fleet")
    parser.add_argument("--balance", choices=POLICIES, default=d.policy,
                        help="how requests spread over several --url endpoints")
    parser.add_argument("--wait-for-server", type=float, default=d.wait_for_server, metavar="SECONDS",
                        help="wait this long for a server to answer before giving up (0: fail within seconds "
                             "when none answers; for scripts that start one just before)")
    out = parser.add_argument_group("output")
    out.add_argument("-o", "--output", default="-",
                     help="CSV or JSONL file (by suffix or --format), a folder (results.<format> inside), or - for stdout")
    out.add_argument("--format", default=d.fmt, choices=["auto", "csv", "jsonl"], help="output format")
    out.add_argument("--resume", action="store_true", help="skip files already in the output and append")
    out.add_argument("--retry-failed", action="store_true",
                     help="with --resume: drop failed records from the output and try those files again")
    out.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    out.add_argument("-q", "--quiet", action="store_true", help="no summary")
    req = parser.add_argument_group("requests")
    req.add_argument("-m", "--model", default=serving.ensemble, help="model (the ensemble) to infer")
    req.add_argument("--model-version", default=d.model_version, help="model version (default: the server's policy)")
    req.add_argument("-c", "--concurrency", type=int, default=d.concurrency, help="requests in flight at once")
    req.add_argument("--timeout", type=float, default=d.timeout, help="request deadline in seconds (0 = none)")
    req.add_argument("--retries", type=int, default=d.retries,
                     help="most retries of a file after transient failures (server down, restarting)")
    req.add_argument("--retry-timeout", type=float, default=d.retry_timeout,
                     help="give files up once every endpoint has been failing for this many seconds")
    req.add_argument("--backoff", type=float, default=d.backoff, help="first retry delay in seconds (doubles each time)")
    req.add_argument("--backoff-max", type=float, default=d.backoff_max, help="longest retry delay in seconds")
    req.add_argument("--shm", action="store_true",
                     help="send the video bytes through system shared memory (client and server on one host; "
                          "needs the operator key)")
    req.add_argument("--admin-key-file", metavar="FILE",
                     help=f"the server's operator key, for --shm (default: ${admin_access.ENV_KEY}, else the key file "
                          "of 'vidcls serve' on this host when every --url is local)")
    req.add_argument("--top-k", type=int, default=d.top_k,
                     help="also report the top K classes through Triton's classification extension (0 = no)")
    req.add_argument("--max-inflight-mb", type=float, default=d.max_inflight_bytes / 2**20,
                     help="most MiB of file contents held at once, all requests together (a bigger file goes alone)")
    req.add_argument("--evidence", nargs="?", type=int, const=DEFAULT_MOMENTS, default=0, metavar="K",
                     help="also record what each answer rests on: the K sampled frames with the most attention "
                          f"(time stamps; default {DEFAULT_MOMENTS}) and the per-model, per-view probabilities")
    req.add_argument("--no-answer-cache", dest="answer_cache", action="store_false",
                     help="classify every file anew, even one the server has answered before")
    tls = parser.add_argument_group("gRPC TLS")
    tls.add_argument("--ssl", action="store_true", help="connect with TLS")
    tls.add_argument("--root-cert", help="PEM CA certificate(s) to verify the server with")
    tls.add_argument("--client-cert", help="PEM client certificate (mutual TLS)")
    tls.add_argument("--client-key", help="PEM client private key (mutual TLS)")


def options_from_args(args: argparse.Namespace) -> ClassifyOptions:
    urls = [u.strip() for item in (getattr(args, "url", None) or ClassifyOptions.urls)
            for u in item.split(",") if u.strip()]
    try:
        tls = TLSOptions(ssl=args.ssl or bool(args.root_cert or args.client_cert), root_cert=args.root_cert,
                         client_cert=args.client_cert, client_key=args.client_key)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return ClassifyOptions(
        urls=urls, output=args.output, fmt=args.format, concurrency=args.concurrency, retries=args.retries,
        retry_timeout=args.retry_timeout,
        backoff=args.backoff, backoff_max=args.backoff_max, policy=args.balance, resume=args.resume,
        retry_failed=args.retry_failed, overwrite=args.overwrite, progress=not args.no_progress, tls=tls,
        model=args.model, model_version=args.model_version, timeout=args.timeout or None, shm=args.shm,
        top_k=args.top_k, wait_for_server=args.wait_for_server,
        max_inflight_bytes=int(args.max_inflight_mb * 2**20), evidence=args.evidence,
        answer_cache=args.answer_cache,
        admin_key=admin_access.client_key(args.admin_key_file, urls) if args.shm else None)


def run(args: argparse.Namespace) -> int:
    """Usage errors (exit 2) and an unreachable server (exit 1) are raised for ``vidcls.cli`` to
    report in one line; a file that fails is a record, and makes the exit code 1."""
    opts = options_from_args(args)
    try:
        summary = asyncio.run(classify_async(args.paths, opts, args.list))
    except KeyboardInterrupt:
        output, _ = resolve_output(opts.output, opts.fmt)
        if output in (None, "-"):
            print("interrupted; the results went to stdout: with -o FILE a run can be resumed", file=sys.stderr)
        else:
            print(f"interrupted; what finished is in {output}: the same command with --resume continues",
                  file=sys.stderr)
        return 130
    if not args.quiet:
        print(summary.format(), file=sys.stderr)
    return summary.exit_code
