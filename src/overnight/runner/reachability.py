"""A word at start-up about model servers that cannot be reached.

A worker sends nothing until a batch comes, and a request to a server that
is down waits for it (`outage_patience`, runner/outage.py) and then fails
its line, or fails at once when the address does not resolve or answer. So a typo in a `base_url`, or a model server not yet
started, showed only as a batch whose every line failed. When a worker's
models start, each server's address is tried once (a TCP connect, nothing
sent) and one that refuses, does not resolve or does not answer in time is
named in a warning, with what it will mean. The check runs beside the
worker and never holds it up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

from overnight.settings import ModelSettings

log = logging.getLogger("overnight.runner")

#: Seconds a connect may take before the server counts as not answering.
CONNECT_TIMEOUT = 3.0
#: Why, when nothing listens on the server's port.
REFUSED = "connection refused"


async def warn_of_unreachable(models: Iterable[ModelSettings]) -> None:
    """Try every model server's address once; log a warning for each that
    cannot be reached."""
    checks = [
        _check(model, url) for model in models if model.backend != "llama-cpp" for url in model.urls
    ]
    await asyncio.gather(*checks)


async def _check(model: ModelSettings, url: str) -> None:
    if (problem := await why_unreachable(url)) is None:
        return
    if problem == REFUSED and model.outage_patience > 0:
        then = f"its requests will wait for it for up to {model.outage_patience:g} s, then fail"
    else:
        then = f"until it is up, each of its requests fails after {model.max_attempts} tries"
    log.warning("model %r: cannot reach its server at %s (%s); %s", model.name, url, problem, then)


async def why_unreachable(url: str, within: float = CONNECT_TIMEOUT) -> str | None:
    """Why a TCP connection to `url`'s host and port cannot be opened, or
    None when it can."""
    parts = urlsplit(url)
    if parts.hostname is None:
        return "no host in the URL"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        async with asyncio.timeout(within):
            _, writer = await asyncio.open_connection(parts.hostname, port)
    except TimeoutError:
        return f"no answer within {within:g} s"
    except ConnectionRefusedError:
        return REFUSED
    except OSError as error:
        return error.strerror or type(error).__name__
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return None
