"""The models this process serves: for each name, a backend, a limiter on
requests in flight, and the adaptive controller that moves the limit."""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from dataclasses import dataclass

from overnight import metrics
from overnight.backends import Backend, UpstreamResult, build_backend
from overnight.backends.http1 import OpenConnections
from overnight.domain.batch import Usage
from overnight.runner.faults import FaultSummary
from overnight.runner.limiter import AdaptiveLimit, Limiter
from overnight.runner.outage import Outage
from overnight.runner.reachability import warn_of_unreachable
from overnight.settings import ModelSettings

log = logging.getLogger("overnight.runner")


@dataclass
class ServedModel:
    settings: ModelSettings
    backend: Backend
    limiter: Limiter
    adaptive: AdaptiveLimit | None

    def __post_init__(self) -> None:
        # Metric children bound once: `.labels()` costs a lookup per call.
        # Attempts are counted in plain ints and published by `report` every
        # poll interval: a metric update (an mmap write, with worker
        # processes) per request would cost more than the counting.
        name = self.settings.name
        self._attempt_counters = [
            metrics.upstream_attempts.labels(name, outcome)
            for outcome in ("ok", "client_error", "congested")
        ]
        self._attempts = [0, 0, 0]
        self._latency_sum = 0.0
        self._latency = metrics.upstream_latency.labels(name)
        self._limit = metrics.concurrency_limit.labels(name)
        self._in_flight = metrics.in_flight.labels(name)
        self._duration = metrics.attempt_duration.labels(name)
        self._buckets = [0] * (len(metrics.ATTEMPT_BUCKETS) + 1)
        self._finished_counters = [
            metrics.lines_finished.labels(name, outcome) for outcome in ("completed", "failed")
        ]
        self._finished = [0, 0]
        #: tenant -> [input, output] tokens since the last report.
        self._tokens: dict[str, list[int]] = {}
        self.faults = FaultSummary(name)
        #: Whether the model's servers are all down, and the wait for them.
        self.outage = Outage(name, self.settings.urls, self.settings.outage_patience)
        #: Recent figures for the dashboard (exponentially weighted over
        #: about the last hundred attempts): seconds per attempt, and the
        #: share of attempts that failed.
        self.recent_latency = 0.0
        self.recent_error_rate = 0.0
        #: Live workers, each with an equal share of max_concurrency.
        self._workers = 1
        #: The connections this process can hold open for this model
        #: (runner/open_files.py); None: not bounded.
        self.connection_budget: int | None = None
        #: After a connect found no file descriptor: the requests in flight
        #: it could reach, held as the limit until `_short_until`.
        self._short_of_files: int | None = None
        self._short_until = 0.0

    def report(self) -> None:
        """Publish what was counted since the last report, and log the
        faults when a summary is due."""
        answered = sum(self._attempts)
        for counter, count in zip(self._attempt_counters, self._attempts, strict=True):
            if count:
                counter.inc(count)
        if answered:
            self._latency.set(self._latency_sum / answered)
            metrics.observe_many(self._duration, self._buckets, self._latency_sum)
            self._buckets = [0] * len(self._buckets)
        for counter, count in zip(self._finished_counters, self._finished, strict=True):
            if count:
                counter.inc(count)
        self._finished = [0, 0]
        for tenant, (tokens_in, tokens_out) in self._tokens.items():
            if tokens_in:
                metrics.tokens.labels(self.settings.name, tenant, "input").inc(tokens_in)
            if tokens_out:
                metrics.tokens.labels(self.settings.name, tenant, "output").inc(tokens_out)
        self._tokens = {}
        self._attempts = [0, 0, 0]
        self._latency_sum = 0.0
        self._limit.set(self.limiter.limit)
        self._in_flight.set(self.limiter.in_flight)
        if self.faults.counts:
            line = self.faults.line(time.monotonic(), self.limiter.limit)
            if line is not None:
                log.warning("%s", line)

    @classmethod
    def build(cls, settings: ModelSettings) -> ServedModel:
        limiter = Limiter(settings.starting_concurrency)
        adaptive = (
            AdaptiveLimit(limiter, maximum=settings.max_concurrency) if settings.adaptive else None
        )
        metrics.concurrency_limit.labels(settings.name).set(limiter.limit)
        return cls(settings, build_backend(settings), limiter, adaptive)

    def share_between(self, workers: int) -> None:
        """`max_concurrency` is global: with n live workers each may have at
        most max_concurrency // n in flight (never less than one)."""
        self._workers = workers
        self._set_limit()

    def hold_connections(self, budget: int | None) -> None:
        """At most `budget` requests in flight, whatever the share: the
        connections this process can hold open for the model."""
        self.connection_budget = budget
        self._set_limit()

    def out_of_files(self) -> None:
        """A connect found no file descriptor free (runner/dispatch.py): for
        `SHORT_OF_FILES_HOLD` seconds, hold the model to the requests it has
        in flight, each of which holds a connection; then back to its share
        (at the next heartbeat), in case the shortage was passing."""
        now = time.monotonic()
        reached = max(1, self.limiter.in_flight)
        if self._short_of_files is None or now >= self._short_until:
            log.warning(
                "model %s: no file descriptor left to connect with (at %d requests in "
                "flight); holding it there for %g s",
                self.settings.name,
                reached,
                SHORT_OF_FILES_HOLD,
            )
        else:
            reached = min(reached, self._short_of_files)
        self._short_of_files = reached
        self._short_until = now + SHORT_OF_FILES_HOLD
        self._set_limit()

    def _set_limit(self) -> None:
        """The limit: this worker's share, within what it can hold open."""
        limit = max(1, self.settings.max_concurrency // self._workers)
        if self.connection_budget is not None:
            limit = min(limit, self.connection_budget)
        if self._short_of_files is not None:
            if time.monotonic() < self._short_until:
                limit = min(limit, self._short_of_files)
            else:
                self._short_of_files = None
        if self.adaptive is not None:
            self.adaptive.cap(limit)
        else:
            self.limiter.limit = limit
        self._limit.set(self.limiter.limit)
        # Connections kept open past a burst, too: three workers each keeping
        # max_concurrency ran out of file descriptors.
        connections: OpenConnections | None = getattr(self.backend, "connections", None)
        if connections is not None:
            connections.keep = limit

    @property
    def epoch(self) -> int:
        """The adaptive limit's epoch, noted when an attempt starts."""
        return 0 if self.adaptive is None else self.adaptive.epoch

    def observe(self, result: UpstreamResult, latency: float, started_in: int) -> None:
        """Feed one attempt's outcome to the adaptive limit, the metrics and
        the fault summary. `started_in` is `epoch` when the attempt started."""
        self._latency_sum += latency
        self._buckets[bisect.bisect_left(metrics.ATTEMPT_BUCKETS, latency)] += 1
        self.recent_latency += (latency - self.recent_latency) * RECENT_WEIGHT
        failed = 0.0 if result.ok else 1.0
        self.recent_error_rate += (failed - self.recent_error_rate) * RECENT_WEIGHT
        if self.outage.out_since is not None and result.status_code is not None:
            self.outage.answered()
        if result.congested:
            self._attempts[2] += 1
            self.faults.count(result)
            if self.adaptive is not None:
                answered = latency if result.status_code is not None else None
                if result.overloaded:
                    self.adaptive.on_overload(started_in, answered)
                else:
                    self.adaptive.on_fault(started_in, answered)
        else:
            self._attempts[0 if result.ok else 1] += 1
            if self.adaptive is not None:
                self.adaptive.on_answer(latency)

    def finished(self, tenant: str, succeeded: bool, usage: Usage | None) -> None:
        """Count a line that got its final result, and its tokens."""
        self._finished[0 if succeeded else 1] += 1
        if usage is not None:
            counts = self._tokens.get(tenant)
            if counts is None:
                counts = self._tokens[tenant] = [0, 0]
            counts[0] += usage.input_tokens
            counts[1] += usage.output_tokens


#: The weight of the newest attempt in the dashboard's recent figures.
RECENT_WEIGHT = 0.01
#: Seconds a model stays held to the connections it could open, after a
#: connect found no file descriptor.
SHORT_OF_FILES_HOLD = 30.0


class Models:
    def __init__(self, configured: list[ModelSettings]) -> None:
        self._models = {m.name: ServedModel.build(m) for m in configured}
        self._reachability: asyncio.Task[None] | None = None

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._models)

    def get(self, name: str) -> ServedModel | None:
        return self._models.get(name)

    def all(self) -> list[ServedModel]:
        return list(self._models.values())

    def share_between(self, workers: int) -> None:
        for model in self._models.values():
            model.share_between(workers)

    def fit_open_files(self, budget: int | None) -> None:
        """Split the connections this process may hold open (`budget`, from
        runner/open_files.py) between the models that connect to a server,
        in proportion to their max_concurrency: a model is held to its
        part only where its slots would exceed it."""
        connecting = [m for m in self._models.values() if m.settings.backend != "llama-cpp"]
        total = sum(m.settings.max_concurrency for m in connecting)
        for model in connecting:
            wanted = model.settings.max_concurrency
            model.hold_connections(
                None if budget is None or total <= budget else max(1, budget * wanted // total)
            )

    async def start(self) -> None:
        await asyncio.gather(*(m.backend.start() for m in self._models.values()))
        self._reachability = asyncio.create_task(
            warn_of_unreachable(m.settings for m in self._models.values()),
            name="model-reachability",
        )

    async def close(self) -> None:
        if self._reachability is not None:
            self._reachability.cancel()
            await asyncio.gather(self._reachability, return_exceptions=True)
        await asyncio.gather(*(m.outage.close() for m in self._models.values()))
        await asyncio.gather(*(m.backend.close() for m in self._models.values()))
