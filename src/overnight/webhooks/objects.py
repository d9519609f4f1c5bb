"""A webhook endpoint as JSON, one shape for the admin API
(`/admin/webhooks`) and `overnight webhooks --json`: a script reads the
same fields from either."""

from __future__ import annotations

from typing import Any

from overnight.domain.webhooks import WebhookEndpoint
from overnight.webhooks.endpoints import WithSecret


def endpoint_object(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "object": "webhook_endpoint",
        "id": endpoint.id,
        "tenant": endpoint.tenant,
        "url": endpoint.url,
        "event_types": [e.value for e in endpoint.event_types],
        "status": "enabled" if endpoint.enabled else "disabled",
        "source": endpoint.source.value,
        "created_at": endpoint.created_at,
        "rotating_until": endpoint.rotating_until,
        "failing_since": endpoint.failing_since,
        "disabled_at": endpoint.disabled_at,
        "disabled_reason": endpoint.disabled_reason,
    }


def with_secret(made: WithSecret) -> dict[str, Any]:
    """An endpoint just made or rotated, with its new secret (shown once)."""
    return {**endpoint_object(made.endpoint), "secret": made.secret}
