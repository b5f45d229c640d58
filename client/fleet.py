"""Several Triton endpoints used as one service, for a fleet without a load balancer.

Each request picks an endpoint (round-robin, or the one with the fewest requests in flight);
an endpoint that fails with a transient error is set aside for a cool-down that doubles with
each consecutive failure, so traffic fails over to the others and comes back once it answers.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

POLICIES = ("least-outstanding", "round-robin")
COOLDOWN_S = 0.5
MAX_COOLDOWN_S = 8.0


@dataclass
class Endpoint:
    url: str
    client: Any = None  # tritonclient.grpc.aio.InferenceServerClient
    outstanding: int = 0
    sent: int = 0
    ok: int = 0
    failures: int = 0  # consecutive transient failures
    failing_since: float | None = None  # start of the current run of failures
    down_until: float = 0.0
    order: int = 0

    def is_up(self, now: float) -> bool:
        return now >= self.down_until


@dataclass
class Fleet:
    endpoints: list[Endpoint]
    policy: str = "least-outstanding"
    clock: Callable[[], float] = time.monotonic
    _rr: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("no endpoints")
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r}; choose from {POLICIES}")
        for i, ep in enumerate(self.endpoints):
            ep.order = i
        self._rr = itertools.count()

    @classmethod
    def from_urls(cls, urls: Iterable[str], policy: str = "least-outstanding",
                  make_client: Callable[[str], Any] | None = None) -> "Fleet":
        unique = list(dict.fromkeys(urls))
        return cls([Endpoint(u, make_client(u) if make_client else None) for u in unique], policy)

    def pick(self, exclude: Iterable[Endpoint] = ()) -> Endpoint:
        """The endpoint for the next attempt. Prefers endpoints that are up and not in ``exclude``
        (those just tried); otherwise the one that comes back first (the caller backs off)."""
        now = self.clock()
        excluded = {id(e) for e in exclude}
        up = [e for e in self.endpoints if e.is_up(now) and id(e) not in excluded]
        if not up:
            rest = [e for e in self.endpoints if id(e) not in excluded] or self.endpoints
            return min(rest, key=lambda e: (e.down_until, e.outstanding, e.order))
        if self.policy == "round-robin" or len(up) == 1:
            # Rotate over the whole fleet so a recovered endpoint gets its share again.
            start = next(self._rr) % len(self.endpoints)
            ranked = sorted(up, key=lambda e: (e.order - start) % len(self.endpoints))
            return ranked[0]
        low = min(e.outstanding for e in up)
        tied = [e for e in up if e.outstanding == low]
        return tied[next(self._rr) % len(tied)]

    def has_other_up(self, exclude: Iterable[Endpoint]) -> bool:
        now = self.clock()
        excluded = {id(e) for e in exclude}
        return any(e.is_up(now) and id(e) not in excluded for e in self.endpoints)

    def succeeded(self, ep: Endpoint) -> None:
        ep.ok += 1
        ep.failures = 0
        ep.failing_since = None
        ep.down_until = 0.0

    def failed(self, ep: Endpoint) -> None:
        """A transient failure (unreachable, restarting): set the endpoint aside for a while."""
        now = self.clock()
        ep.failures += 1
        if ep.failing_since is None:
            ep.failing_since = now
        ep.down_until = now + min(MAX_COOLDOWN_S, COOLDOWN_S * 2 ** min(ep.failures - 1, 16))

    def outage_s(self) -> float:
        """How long every endpoint has been failing (0 while any of them has not)."""
        starts = [ep.failing_since for ep in self.endpoints]
        if any(s is None for s in starts):
            return 0.0
        return self.clock() - max(starts)
