"""The models this process serves: a backend and a limiter for each name."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from overnight.backends import Backend, build_backend
from overnight.runner.limiter import Limiter
from overnight.settings import ModelSettings


@dataclass
class ServedModel:
    settings: ModelSettings
    backend: Backend
    limiter: Limiter


class Models:
    def __init__(self, configured: list[ModelSettings]) -> None:
        self._models = {
            m.name: ServedModel(m, build_backend(m), Limiter(m.max_concurrency)) for m in configured
        }

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._models)

    def get(self, name: str) -> ServedModel | None:
        return self._models.get(name)

    async def start(self) -> None:
        await asyncio.gather(*(m.backend.start() for m in self._models.values()))

    async def close(self) -> None:
        await asyncio.gather(*(m.backend.close() for m in self._models.values()))
