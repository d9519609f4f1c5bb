"""Who is calling: API keys -> callers, and the keys themselves.

Keys come from three places, all looked up by their SHA-256 (so a lookup's
timing says nothing about how much of a guessed key was right, and memory
holds no key in the clear once the settings are read):

- the config's `[[tenants]]`, as `api_keys` or, better, `api_key_hashes`;
- `admin_api_key_hashes` in the config, for admin keys;
- keys made with `overnight keys create`, stored as hashes in the database,
  found per request (so a revoke takes effect at once on every process).

With none of them, the service runs in single-user local mode: every caller
is the tenant `default`, with the admin's rights. The mode only ever closes:
once a key exists in the database, a running server requires keys from the
next request on, and revoking every key locks everyone out rather than
opening the server up again.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass

from overnight.domain.keys import (
    SHOWN_CHARACTERS,
    ApiKey,
    KeyRole,
    key_digest,
    new_key,
    new_key_id,
    tenant_name_problem,
)
from overnight.errors import InvalidRequest, NotFound
from overnight.settings import Settings
from overnight.store.contracts import KeyStore
from overnight.store.sql import open_store
from overnight.types import TenantId

LOCAL_TENANT = TenantId("default")


@dataclass(frozen=True, slots=True)
class Caller:
    """Whom a request acts for. `tenant` None is an admin seeing every
    tenant; an admin may also act for one tenant (`x-overnight-tenant`)."""

    tenant: TenantId | None
    admin: bool = False


class Tenants:
    def __init__(self, settings: Settings, store: KeyStore) -> None:
        self.store = store
        self._configured = {
            **{key_digest(key): TenantId(t.name) for t in settings.tenants for key in t.api_keys},
            **{digest: TenantId(t.name) for t in settings.tenants for digest in t.api_key_hashes},
        }
        self._admins = frozenset(settings.admin_api_key_hashes)
        self.configured_names = sorted(t.name for t in settings.tenants)
        self.local_mode = not (settings.tenants or self._admins)

    async def load(self) -> None:
        """Leave local mode if the database holds keys."""
        if self.local_mode and await self.store.has_api_keys():
            self.local_mode = False

    async def resolve(self, key: str | None) -> Caller | None:
        """The caller a key acts for; None for a missing, unknown or revoked key."""
        if self.local_mode:
            await self.load()
            if self.local_mode:
                return Caller(LOCAL_TENANT, admin=True)
        if not key:
            return None
        return await self.resolve_digest(key_digest(key))

    async def resolve_digest(self, digest: str) -> Caller | None:
        """The caller of the key with this SHA-256, if it is still valid (a
        dashboard session keeps only the digest, and asks again on each
        page, so revoking the key ends the session too)."""
        if digest in self._admins:
            return Caller(None, admin=True)
        tenant = self._configured.get(digest)
        if tenant is not None:
            return Caller(tenant)
        stored = await self.store.find_api_key(digest)
        if stored is None:
            return None
        if stored.role is KeyRole.ADMIN:
            return Caller(None, admin=True)
        return Caller(stored.tenant)


# ----------------------------------------------------------- key management


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just made: `secret` is shown this once and stored nowhere."""

    key: ApiKey
    secret: str


async def create_key(store: KeyStore, *, tenant: str | None, admin: bool = False) -> NewKey:
    """Make a key for `tenant`, or an admin key (which belongs to no tenant)."""
    if admin:
        if tenant is not None:
            raise InvalidRequest("An admin key belongs to no tenant; leave out --tenant.")
        role = KeyRole.ADMIN
    else:
        if tenant is None:
            raise InvalidRequest("Name the tenant the key acts for (--tenant NAME).")
        problem = tenant_name_problem(tenant)
        if problem is not None:
            raise InvalidRequest(problem, param="tenant")
        role = KeyRole.TENANT
    secret = new_key()
    key = ApiKey(
        id=new_key_id(),
        digest=key_digest(secret),
        shown=secret[:SHOWN_CHARACTERS],
        role=role,
        tenant=TenantId(tenant) if tenant is not None else None,
        created_at=int(time.time()),
    )
    await store.insert_api_key(key)
    return NewKey(key, secret)


async def revoke_keys(
    store: KeyStore, *, key_id: str | None = None, tenant: str | None = None
) -> list[ApiKey]:
    """Revoke one key (by id or shown prefix), or every key of a tenant."""
    if key_id is None and tenant is None:
        raise InvalidRequest("Name a key id, or --tenant NAME to revoke all of its keys.")
    revoked = await store.revoke_api_keys(int(time.time()), key_id=key_id, tenant=tenant)
    if not revoked:
        raise NotFound("No active key matches.", code="key_not_found")
    return revoked


# ------------------------------------------------------------- exposure


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


async def keys_exist(settings: Settings) -> bool:
    """Whether the database holds API keys (which end single-user local mode)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = await open_store(settings.resolved_database_url)
    try:
        return await store.has_api_keys()
    finally:
        await store.close()
