"""The models this process serves: for each name, a backend, a limiter on
requests in flight, and the adaptive controller that moves the limit."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from overnight import metrics
from overnight.backends import Backend, UpstreamResult, build_backend
from overnight.runner.limiter import AdaptiveLimit, Limiter
from overnight.settings import ModelSettings


@dataclass
class ServedModel:
    settings: ModelSettings
    backend: Backend
    limiter: Limiter
    adaptive: AdaptiveLimit | None

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
        share = max(1, self.settings.max_concurrency // workers)
        if self.adaptive is not None:
            self.adaptive.cap(share)
        else:
            self.limiter.limit = share
        metrics.concurrency_limit.labels(self.settings.name).set(self.limiter.limit)

    def observe(self, result: UpstreamResult, latency: float) -> None:
        """Feed one attempt's outcome to the adaptive limit and the metrics."""
        name = self.settings.name
        metrics.upstream_latency.labels(name).observe(latency)
        if result.congested:
            metrics.upstream_attempts.labels(name, "congested").inc()
            if self.adaptive is not None:
                self.adaptive.on_congestion(latency if result.status_code is not None else None)
        else:
            outcome = "ok" if result.ok else "client_error"
            metrics.upstream_attempts.labels(name, outcome).inc()
            if self.adaptive is not None:
                self.adaptive.on_answer(latency)
        metrics.concurrency_limit.labels(name).set(self.limiter.limit)


class Models:
    def __init__(self, configured: list[ModelSettings]) -> None:
        self._models = {m.name: ServedModel.build(m) for m in configured}

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

    async def start(self) -> None:
        await asyncio.gather(*(m.backend.start() for m in self._models.values()))

    async def close(self) -> None:
        await asyncio.gather(*(m.backend.close() for m in self._models.values()))
