"""Upload grants: what one signed upload URL allows its bearer to do.

Together's SDKs upload in three steps: ask for an upload URL, PUT the raw
bytes there without an API key, then ask the server to process the file. The
URL's token is the only credential of the PUT, so it is unguessable (256
random bits), lives a short while, and works once. Only its SHA-256 is
stored: a copy of the database does not hold usable upload URLs.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from overnight.domain.files import FilePurpose
from overnight.types import FileId, TenantId, UploadId

#: Bytes of randomness in a token (43 characters once base64url-encoded).
TOKEN_BYTES = 32


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class UploadGrant:
    """One PUT of one file (single upload) or of one part of a multipart
    upload (`upload_id` and `part_number` set)."""

    token_hash: str
    tenant: TenantId
    file_id: FileId
    filename: str
    purpose: FilePurpose
    created_at: int
    expires_at: int
    #: SHA-256 (hex) the caller promised for the file; a single upload whose
    #: bytes differ is refused.
    checksum: str | None = None
    upload_id: UploadId | None = None
    part_number: int | None = None
    used_at: int | None = None

    @property
    def is_part(self) -> bool:
        return self.upload_id is not None


def refusal(grant: UploadGrant | None, now: int) -> str | None:
    """Why a PUT with this grant is refused, or None if it may proceed."""
    if grant is None:
        return "This upload URL is not valid; request a new one with POST /files."
    if grant.used_at is not None:
        return "This upload URL was already used; each upload URL works once."
    if grant.expires_at <= now:
        return "This upload URL has expired; request a new one with POST /files."
    return None
