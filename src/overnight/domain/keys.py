"""API keys: what one key is, and how a new one is made.

A key is shown once, when it is made; only its SHA-256 is stored, so a copy
of the database (or of a config file using `api_key_hashes`) holds nothing
that lets anyone in. The digest is also what a request's key is looked up
by, so the lookup's timing says nothing about how much of a guess was right.
A short prefix of the key is kept in the clear, only so that people can
tell their keys apart in `overnight keys list`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum

from overnight.types import TenantId

#: What a tenant may be called: it shows in URLs of the admin API and in logs.
TENANT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$"
#: A SHA-256 digest as 64 lower-case hex digits.
SHA256_HEX_PATTERN = r"^[0-9a-f]{64}$"
#: Every key made here starts with this, so a leaked one is easy to grep for.
KEY_PREFIX = "ovn-"
#: Random bytes in a key (43 characters once base64url-encoded).
KEY_BYTES = 32
#: Characters of the key kept in the clear for display (the prefix and 8 more).
SHOWN_CHARACTERS = len(KEY_PREFIX) + 8

_TENANT_NAME = re.compile(TENANT_NAME_PATTERN)


class KeyRole(StrEnum):
    #: Acts for one tenant: sees and changes only that tenant's objects.
    TENANT = "tenant"
    #: Sees every tenant's objects and sets quotas (the admin API).
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key, without its secret."""

    id: str
    digest: str
    shown: str
    role: KeyRole
    tenant: TenantId | None
    created_at: int
    revoked_at: int | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def key_digest(key: str) -> str:
    """The SHA-256 (hex) a key is stored and looked up by."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def new_key_id() -> str:
    return f"key_{secrets.token_hex(8)}"


def tenant_name_problem(name: str) -> str | None:
    """Why `name` cannot name a tenant, or None if it can."""
    if _TENANT_NAME.fullmatch(name):
        return None
    return (
        f"{name!r} is not a valid tenant name: use 1-128 letters, digits, '.', '_', '@' "
        "or '-', starting with a letter or digit."
    )
