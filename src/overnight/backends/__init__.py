"""Backends: how one request reaches a model."""

from __future__ import annotations

from overnight.backends.base import Backend, UpstreamRequest, UpstreamResult
from overnight.settings import ModelSettings


def build_backend(model: ModelSettings) -> Backend:
    if model.backend == "llama-cpp":
        from overnight.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend(model)
    from overnight.backends.http import HttpBackend

    return HttpBackend(model)


__all__ = ["Backend", "UpstreamRequest", "UpstreamResult", "build_backend"]
