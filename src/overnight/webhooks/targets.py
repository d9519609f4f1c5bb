"""Where a delivery may connect: no SSRF.

An endpoint's URL is chosen by whoever made it, and the server sends to it
from inside the deployment's network: a URL naming 127.0.0.1, a 10.x
address or the cloud's metadata service (169.254.169.254) would let a
tenant reach what only the server should. So before every attempt the host
is resolved here, every address it resolves to is checked, and the
connection is then made to the address that was checked (`Target.address`,
pinned): a name whose DNS answer changes between the check and the connect
(DNS rebinding) cannot slip a private address in. The URL's host still goes
in the `Host` header and the TLS SNI.

`webhook_allow_private_targets = true` turns the check off (a receiver on
the same machine or network, and the tests); the address is still pinned.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: A host's addresses (as text), given the host and port to connect to.
Resolver = Callable[[str, int], Awaitable[list[str]]]

#: Metadata services of the clouds, by their well-known addresses (AWS,
#: GCP, Azure, OpenStack share the first; AWS's IPv6 one the second).
CLOUD_METADATA = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)


class TargetRefused(Exception):
    """The endpoint may not be sent to now; the message says why."""


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    host: str
    port: int
    #: The checked address the connection goes to.
    address: str


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the system's resolver gives `host`."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def address_problem(address: IPAddress) -> str | None:
    """What kind of address this is if no delivery may go to it, or None."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return address_problem(embedded)
    if address in CLOUD_METADATA:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if isinstance(address, ipaddress.IPv6Address) and address in _UNIQUE_LOCAL:
        return "a unique-local address"
    if address.is_private:
        return "a private address"
    if address.is_multicast or address.is_unspecified or address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "not a public address"
    return None


_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")


async def resolve_target(url: str, *, allow_private: bool, resolve: Resolver) -> Target:
    """The address to send `url`'s delivery to, checked; TargetRefused if
    the host does not resolve or (unless `allow_private`) any of its
    addresses is loopback, private, link-local, metadata or reserved."""
    parsed = urlsplit(url)
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    addresses = await _addresses(host, port, resolve)
    if not allow_private:
        for address in addresses:
            problem = address_problem(address)
            if problem is not None:
                named = host if _is_address(host) else f"{host} resolves to {address}"
                raise TargetRefused(
                    f"refused: {named}, {problem} (webhook_allow_private_targets is off)"
                )
    return Target(url=url, host=host, port=port, address=str(addresses[0]))


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _addresses(host: str, port: int, resolve: Resolver) -> list[IPAddress]:
    """The host itself if it is an address, else what it resolves to."""
    if _is_address(host):
        return [ipaddress.ip_address(host)]
    try:
        resolved = await resolve(host, port)
    except OSError as exc:
        raise TargetRefused(f"{host} does not resolve: {exc}") from exc
    if not resolved:
        raise TargetRefused(f"{host} resolves to no address")
    # A scope (fe80::1%eth0) is not part of the address.
    return [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolved]
