"""Managing webhook endpoints: the use cases behind the admin API and
`overnight webhooks add|list|remove|rotate`.

A secret is made here and shown once, in the answer to the call that made
it (add, rotate); the store keeps it to sign with, and nothing that lists
or shows an endpoint carries it. Endpoints listed in the config file are
copied into the store at start-up (`sync_config`) under ids derived from
tenant and URL, and are changed only there: removing or rotating one here
would be undone by the next start.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from overnight._ids import new_webhook_id
from overnight.domain.keys import tenant_name_problem
from overnight.domain.webhooks import (
    EVENT_TYPES,
    DeliveryAttempt,
    EndpointSource,
    EventType,
    SigningSecrets,
    WebhookEndpoint,
    event_types_problem,
    url_problem,
)
from overnight.errors import Conflict, InvalidRequest, NotFound
from overnight.settings import Settings, WebhookSettings
from overnight.store.contracts import WebhookStore
from overnight.types import TenantId
from overnight.webhooks.signing import new_secret

#: Most lines of the delivery log one call returns.
MAX_LOG_PAGE = 100


@dataclass(frozen=True, slots=True)
class WithSecret:
    """An endpoint just made or rotated, and its new secret: shown this once."""

    endpoint: WebhookEndpoint
    secret: str


@dataclass(frozen=True, slots=True)
class LogPage:
    attempts: list[DeliveryAttempt]
    has_more: bool


class Webhooks:
    def __init__(self, store: WebhookStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    async def add(self, tenant: str, url: str, event_types: list[str] | None = None) -> WithSecret:
        """A new endpoint for `tenant`, listening for `event_types` (every
        batch event when None)."""
        problem = tenant_name_problem(tenant)
        if problem is not None:
            raise InvalidRequest(problem, param="tenant", code="invalid_value")
        if problem := url_problem(url):
            raise InvalidRequest(f"The URL {url!r} {problem}.", param="url", code="invalid_value")
        names = [e.value for e in EVENT_TYPES] if event_types is None else event_types
        if problem := event_types_problem(names):
            raise InvalidRequest(
                f"event_types {problem}.", param="event_types", code="invalid_value"
            )
        endpoint = WebhookEndpoint(
            id=new_webhook_id(),
            tenant=TenantId(tenant),
            url=url,
            event_types=tuple(EventType(n) for n in dict.fromkeys(names)),
            created_at=int(time.time()),
        )
        secret = new_secret()
        await self.store.insert_webhook(endpoint, SigningSecrets(secret))
        return WithSecret(endpoint, secret)

    async def endpoints(self, tenant: str | None = None) -> list[WebhookEndpoint]:
        if tenant is not None and (problem := tenant_name_problem(tenant)):
            raise InvalidRequest(problem, param="tenant", code="invalid_value")
        return await self.store.list_webhooks(tenant)

    async def get(self, endpoint_id: str) -> WebhookEndpoint:
        plausible = len(endpoint_id) <= 64 and endpoint_id.isascii() and endpoint_id.isprintable()
        endpoint = await self.store.get_webhook(endpoint_id) if plausible else None
        if endpoint is None:
            raise NotFound(
                f"No webhook endpoint {endpoint_id}.", param="endpoint_id", code="webhook_not_found"
            )
        return endpoint

    async def remove(self, endpoint_id: str) -> WebhookEndpoint:
        """Remove an endpoint; what it had not been sent yet is dropped."""
        self._changeable(await self.get(endpoint_id))
        removed = await self.store.delete_webhook(endpoint_id)
        if removed is None:  # removed meanwhile
            raise NotFound(f"No webhook endpoint {endpoint_id}.", code="webhook_not_found")
        return removed

    async def rotate(self, endpoint_id: str) -> WithSecret:
        """A new secret signs from now on; the old one signs beside it for
        `webhook_rotation_overlap` seconds, while receivers move over."""
        self._changeable(await self.get(endpoint_id))
        secret = new_secret()
        until = int(time.time()) + self.settings.webhook_rotation_overlap
        rotated = await self.store.rotate_webhook_secret(endpoint_id, secret, previous_until=until)
        if rotated is None:
            raise NotFound(f"No webhook endpoint {endpoint_id}.", code="webhook_not_found")
        return WithSecret(rotated, secret)

    async def enable(self, endpoint_id: str) -> WebhookEndpoint:
        """Send to an endpoint disabled for failing again (what is still
        pending for it goes out)."""
        await self.get(endpoint_id)
        enabled = await self.store.enable_webhook(endpoint_id)
        if enabled is None:
            raise NotFound(f"No webhook endpoint {endpoint_id}.", code="webhook_not_found")
        return enabled

    async def deliveries(
        self, endpoint_id: str, *, after: int | None = None, limit: int = 20
    ) -> LogPage:
        """A page of the endpoint's delivery log, newest first, before the
        attempt id `after`."""
        if not 1 <= limit <= MAX_LOG_PAGE:
            raise InvalidRequest(
                f"limit must be between 1 and {MAX_LOG_PAGE}.", param="limit", code="invalid_value"
            )
        await self.get(endpoint_id)
        attempts = await self.store.webhook_attempts(endpoint_id, after=after, limit=limit + 1)
        return LogPage(attempts[:limit], has_more=len(attempts) > limit)

    async def sync_config(self) -> None:
        """Make the store's config endpoints those the settings list."""
        now = int(time.time())
        await self.store.sync_config_webhooks(
            [configured_endpoint(w, now) for w in self.settings.webhooks]
        )

    @staticmethod
    def _changeable(endpoint: WebhookEndpoint) -> None:
        if endpoint.source is EndpointSource.CONFIG:
            raise Conflict(
                f"Webhook endpoint {endpoint.id} is set in the config file; change it there.",
                code="webhook_in_config",
            )


def configured_endpoint(
    configured: WebhookSettings, now: int
) -> tuple[WebhookEndpoint, SigningSecrets]:
    """A config file's endpoint, under an id that stays the same across starts."""
    digest = hashlib.sha256(f"{configured.tenant}\n{configured.url}".encode()).hexdigest()
    endpoint = WebhookEndpoint(
        id=f"we_{digest[:24]}",
        tenant=TenantId(configured.tenant),
        url=configured.url,
        event_types=tuple(EventType(n) for n in dict.fromkeys(configured.event_types)),
        created_at=now,
        source=EndpointSource.CONFIG,
    )
    return endpoint, SigningSecrets(configured.secret, configured.previous_secret)
