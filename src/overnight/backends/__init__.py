"""Backends: how one request reaches a model."""

from __future__ import annotations

from overnight.backends.base import Backend, UpstreamRequest, UpstreamResult
from overnight.settings import ModelSettings
from overnight.translate import API_NAMES

#: The request shapes that are translated when a server does not speak them.
TRANSLATED_APIS = tuple(name for name in API_NAMES if name != "chat")


def build_backend(model: ModelSettings) -> Backend:
    """The model's backend; wrapped in a translator when its server does
    not speak every request shape (`apis`)."""
    backend = _server_backend(model)
    if set(TRANSLATED_APIS) <= set(model.apis):
        return backend
    from overnight.backends.translating import Translating

    return Translating(backend, model=model.name, apis=frozenset(model.apis))


def _server_backend(model: ModelSettings) -> Backend:
    if model.backend == "llama-cpp":
        from overnight.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend(model)
    from overnight.backends.http import HttpBackend

    return HttpBackend(model)


__all__ = ["Backend", "UpstreamRequest", "UpstreamResult", "build_backend"]
