"""The admin's use cases: every tenant at a glance, and its quotas.

Dialect-neutral like `service.py`; `api/admin.py` serves it over HTTP to
admin keys only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from overnight.domain.keys import tenant_name_problem
from overnight.domain.quotas import QuotaOverrides, Quotas, TenantUsage
from overnight.errors import InvalidRequest, NotFound
from overnight.settings import Settings
from overnight.store.contracts import AdminStore


@dataclass(frozen=True, slots=True)
class TenantOverview:
    name: str
    #: The quotas in force: the overrides over the defaults.
    quotas: Quotas
    overrides: QuotaOverrides
    usage: TenantUsage
    active_keys: int


class Admin:
    def __init__(self, store: AdminStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    async def tenants(self) -> list[TenantOverview]:
        """Every tenant that is configured or has keys, quotas, files or batches."""
        names = await self.store.known_tenants()
        names.update(t.name for t in self.settings.tenants)
        return [await self._overview(name) for name in sorted(names)]

    async def tenant(self, name: str) -> TenantOverview:
        if name not in {t.name for t in self.settings.tenants} and (
            name not in await self.store.known_tenants()
        ):
            raise NotFound(f"No such tenant: {name}", param="name", code="tenant_not_found")
        return await self._overview(name)

    async def set_quotas(self, name: str, overrides: QuotaOverrides) -> TenantOverview:
        """Set a tenant's quotas; a None keeps (or returns to) the default.
        A tenant need not exist yet: quotas may be set before its keys."""
        problem = tenant_name_problem(name)
        if problem is not None:
            raise InvalidRequest(problem, param="name", code="invalid_value")
        await self.store.set_quota_overrides(name, overrides, int(time.time()))
        return await self._overview(name)

    async def _overview(self, name: str) -> TenantOverview:
        overrides = await self.store.quota_overrides(name)
        keys = await self.store.list_api_keys(name)
        configured = next((t for t in self.settings.tenants if t.name == name), None)
        configured_keys = (
            len(configured.api_keys) + len(configured.api_key_hashes) if configured else 0
        )
        return TenantOverview(
            name=name,
            quotas=overrides.over(self.settings.default_quotas),
            overrides=overrides,
            usage=await self.store.tenant_usage(name),
            active_keys=len(keys) + configured_keys,
        )
