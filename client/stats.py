"""Per-model server-side statistics from Triton's statistics API, over a measurement window.

Triton keeps cumulative counters per model: requests (``inference_count``), executions
(``execution_count``; requests / executions = the average dynamic batch), and per-request queue
and compute durations; ``batch_stats`` holds the compute time per execution. Taking them before
and after a run and subtracting gives, per pipeline step, how long a request waited, how long the
step computed, and how busy the step was: the busiest step is the bottleneck.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable

from vidcls.admin_access import grpc_headers

PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


def fetch_statistics(url: str, ssl: bool = False, root_cert: str | None = None, client_cert: str | None = None,
                     client_key: str | None = None, timeout: float = 30.0,
                     admin_key: str | None = None) -> dict[str, Any]:
    """All models' statistics as JSON (the gRPC statistics API; servers started by vidcls keep
    it for requests with the operator key ``admin_key``)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url, ssl=ssl, root_certificates=root_cert, private_key=client_key,
                                              certificate_chain=client_cert)
    try:
        return client.get_inference_statistics(model_name="", headers=grpc_headers(admin_key), as_json=True,
                                               client_timeout=timeout)
    finally:
        client.close()


def _n(d: dict, *keys: str) -> int:
    """A counter from the JSON (uint64 values arrive as strings; zero values are left out)."""
    for k in keys:
        if not isinstance(d, dict):
            return 0
        d = d.get(k, 0)
    return int(d or 0)


def _flatten(stats: dict[str, Any]) -> dict[tuple[str, str], dict[str, int]]:
    out = {}
    for m in stats.get("model_stats", []):
        inf = m.get("inference_stats", {})
        row = {"requests": _n(m, "inference_count"), "executions": _n(m, "execution_count"),
               "success": _n(inf, "success", "count"), "fail": _n(inf, "fail", "count")}
        for ph in PHASES:
            row[f"{ph}_ns"] = _n(inf, ph, "ns")
            row[f"{ph}_count"] = _n(inf, ph, "count")
        # Compute time per execution (a batch counts once): how long the step was busy.
        row["busy_ns"] = sum(_n(b, ph, "ns") for b in m.get("batch_stats", []) for ph in PHASES[1:])
        if not m.get("batch_stats"):
            row["busy_ns"] = sum(row[f"{ph}_ns"] for ph in PHASES[1:])
        out[(m.get("name", ""), str(m.get("version", "")))] = row
    return out


@dataclass
class StepStats:
    model: str
    version: str
    requests: int
    executions: int
    failures: int
    avg_batch: float
    queue_ms: float  # per request
    compute_ms: float  # input + infer + output, per request
    infer_ms: float  # infer only, per request
    busy_s: float  # compute time summed over executions
    busy_share: float  # busy_s / window (1.0 = one instance busy all the time)
    is_ensemble: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def diff_statistics(before: dict[str, Any], after: dict[str, Any], window_s: float,
                    ensemble: str | Iterable[str] | None = None) -> list[StepStats]:
    """The steps that served requests between the two snapshots, busiest first after the ensemble.

    ``ensemble``: the model(s) that answer end to end rather than compute a step (the model clients
    call and the pipeline ensemble behind it); they are listed first and never the bottleneck."""
    ends = {ensemble} if isinstance(ensemble, str) else set(ensemble or ())
    b, a = _flatten(before), _flatten(after)
    steps = []
    for key, now in a.items():
        old = b.get(key, {k: 0 for k in now})
        d = {k: now[k] - old.get(k, 0) for k in now}
        if d["requests"] <= 0 and d["success"] <= 0:
            continue
        count = max(1, d["success"])
        compute = sum(d[f"{ph}_ns"] for ph in PHASES[1:])
        steps.append(StepStats(
            model=key[0], version=key[1], requests=d["requests"], executions=d["executions"], failures=d["fail"],
            avg_batch=d["requests"] / d["executions"] if d["executions"] else 0.0,
            queue_ms=d["queue_ns"] / count / 1e6, compute_ms=compute / count / 1e6,
            infer_ms=d["compute_infer_ns"] / count / 1e6, busy_s=d["busy_ns"] / 1e9,
            busy_share=(d["busy_ns"] / 1e9) / window_s if window_s > 0 else 0.0,
            is_ensemble=key[0] in ends))
    steps.sort(key=lambda s: (not s.is_ensemble, -s.busy_s))
    return steps


def bottleneck(steps: list[StepStats]) -> StepStats | None:
    """The composing step with the most compute time in the window (it limits throughput)."""
    inner = [s for s in steps if not s.is_ensemble]
    return max(inner, key=lambda s: s.busy_s) if inner else None


def markdown_table(steps: list[StepStats]) -> str:
    lines = ["| model | requests | executions | avg batch | queue ms/req | compute ms/req | busy s | busy % of window |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in steps:
        name = f"{s.model} (ensemble, end to end)" if s.is_ensemble else s.model
        busy = "" if s.is_ensemble else f"{s.busy_s:.2f}"
        share = "" if s.is_ensemble else f"{100 * s.busy_share:.0f}%"
        lines.append(f"| {name} | {s.requests} | {s.executions} | {s.avg_batch:.2f} | {s.queue_ms:.1f} | "
                     f"{s.compute_ms:.1f} | {busy} | {share} |")
    return "\n".join(lines)
