"""API keys -> tenants.

Keys are looked up by their SHA-256, so the lookup's timing says nothing
about how much of a guessed key was right, and the table in memory holds no
key in the clear. With no tenants configured the service runs in
single-user local mode: every caller is the tenant `default`.
"""

from __future__ import annotations

import hashlib

from overnight.settings import TenantSettings
from overnight.types import TenantId

LOCAL_TENANT = TenantId("default")


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Tenants:
    def __init__(self, configured: list[TenantSettings]) -> None:
        self.local_mode = not configured
        self._by_digest = {
            key_digest(key): TenantId(tenant.name)
            for tenant in configured
            for key in tenant.api_keys
        }

    def resolve(self, key: str | None) -> TenantId | None:
        """The tenant a key acts for; None for an unknown or missing key."""
        if self.local_mode:
            return LOCAL_TENANT
        if not key:
            return None
        return self._by_digest.get(key_digest(key))
