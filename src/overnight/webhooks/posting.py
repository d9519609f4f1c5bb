"""One delivery attempt: a POST of the event to its checked, pinned address.

aiohttp, with a resolver that knows one name and answers it with the
address `targets.py` checked, so the connection cannot go anywhere else;
the URL keeps its host name, which aiohttp puts in the `Host` header and
the TLS SNI (and checks the certificate against). Redirects are not
followed (a 3xx is a failed attempt: following one would send the event,
unchecked, wherever the receiver points), proxies from the environment are
not used, and the whole attempt has `time_limit` seconds.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import time
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from overnight import __version__
from overnight.domain.webhooks import AttemptResult
from overnight.webhooks.targets import Target

USER_AGENT = f"overnight-webhooks/{__version__}"
#: Bytes of a receiver's answer read (and dropped); the rest is not waited for.
ANSWER_BYTES = 64 * 1024


class PinnedResolver(AbstractResolver):
    """Resolves the target's host to its checked address, and nothing else."""

    def __init__(self, target: Target) -> None:
        self.target = target

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host != self.target.host:
            raise OSError(f"{host} is not the pinned host {self.target.host}")
        version = ipaddress.ip_address(self.target.address).version
        return [
            ResolveResult(
                hostname=host,
                host=self.target.address,
                port=port,
                family=socket.AF_INET6 if version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        return None


async def post(
    target: Target, body: bytes, headers: dict[str, str], *, time_limit: float
) -> AttemptResult:
    """POST `body` to the target: the status code it answered, or what went wrong."""
    started = time.monotonic()

    def elapsed() -> int:
        return round((time.monotonic() - started) * 1000)

    connector = aiohttp.TCPConnector(
        resolver=PinnedResolver(target), use_dns_cache=False, force_close=True
    )
    sent: dict[str, Any] = {
        **headers,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
    try:
        async with (
            aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=time_limit)
            ) as session,
            session.post(target.url, data=body, headers=sent, allow_redirects=False) as answer,
        ):
            status = answer.status
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                await answer.content.read(ANSWER_BYTES)  # the status is what counts
            return AttemptResult(status, elapsed())
    except TimeoutError:
        return AttemptResult(None, elapsed(), f"timed out after {time_limit:g} s")
    except aiohttp.ClientConnectorCertificateError as exc:
        why = getattr(exc.certificate_error, "verify_message", None) or exc.certificate_error
        return AttemptResult(
            None, elapsed(), f"the TLS certificate of {target.host} was refused: {why}"
        )
    except aiohttp.ClientConnectorError as exc:
        reason = type(exc.os_error).__name__
        where = f"{target.address} port {target.port}"
        return AttemptResult(None, elapsed(), f"could not connect to {where} ({reason})")
    except aiohttp.ClientError as exc:
        return AttemptResult(None, elapsed(), f"failed: {type(exc).__name__}: {exc}")
