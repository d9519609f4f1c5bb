"""`overnight webhooks add|list|remove|rotate`: a tenant's webhook endpoints,
from the command line, on the store the settings name (as `overnight keys`
does). Commands parse, call `webhooks.endpoints.Webhooks`, and print; a
secret is printed once, on stdout, by the command that made it.

cli/__init__.py registers this group beside the others.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from overnight.cli.common import (
    ConfigOption,
    DataDirOption,
    JsonOption,
    columns,
    load_cli_settings,
    note,
    print_json,
    run_on_store,
    when,
)

if TYPE_CHECKING:
    from overnight.settings import Settings
    from overnight.store.contracts import Store
    from overnight.webhooks.endpoints import Webhooks, WithSecret

T = TypeVar("T")

webhooks_app = typer.Typer(
    help="Webhook endpoints: where a tenant hears that its batches ended.",
    no_args_is_help=True,
)
EndpointArgument = Annotated[str, typer.Argument(help="The endpoint's id (we_...).")]


@webhooks_app.command("add")
def add(
    url: Annotated[str, typer.Argument(help="Where to POST the events (http:// or https://).")],
    tenant: Annotated[str, typer.Option("--tenant", help="Whose batches' events it receives.")],
    event: Annotated[
        list[str] | None,
        typer.Option(
            "--event",
            help="An event type to send (repeat for several); default: every batch event.",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Add an endpoint and print its signing secret (only this once)."""

    async def add_and_check(hooks: Webhooks, store: Store) -> tuple[WithSecret, bool]:
        made = await hooks.add(tenant, url, event or None)
        configured = {t.name for t in hooks.settings.tenants}
        return made, tenant in configured or tenant in await store.known_tenants()

    made, known = _run(config, data_dir, add_and_check)
    if json_output:
        from overnight.webhooks.objects import with_secret

        print_json(with_secret(made))
    else:
        events = ", ".join(e.value for e in made.endpoint.event_types)
        note(
            f"created {made.endpoint.id} for tenant {tenant} ({events}); "
            "keep the signing secret now, it is not shown again:"
        )
        typer.echo(made.secret)
    if not known:  # a misspelt tenant would wait for events in silence
        note(
            f"note: no tenant {tenant} is known here yet (no key, file or batch of it); "
            "check the name: its endpoint gets events only once it has batches"
        )


@webhooks_app.command("list")
def list_(
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Only this tenant's.", show_default=False)
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """List endpoints (never their secrets)."""
    endpoints = _run(config, data_dir, lambda hooks, _: hooks.endpoints(tenant))
    if json_output:
        from overnight.webhooks.objects import endpoint_object

        print_json([endpoint_object(e) for e in endpoints])
        return
    rows = [("ID", "TENANT", "URL", "EVENTS", "STATUS", "SOURCE", "CREATED")]
    rows += [
        (
            e.id,
            e.tenant,
            e.url,
            ",".join(t.value.removeprefix("batch.") for t in e.event_types),
            "enabled" if e.enabled else f"disabled {when(e.disabled_at)}",
            e.source.value,
            when(e.created_at),
        )
        for e in endpoints
    ]
    columns(rows)
    for e in endpoints:
        if e.disabled_reason:
            typer.echo(f"{e.id}: {e.disabled_reason}")


@webhooks_app.command("remove")
def remove(
    endpoint_id: EndpointArgument,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Remove an endpoint; events not yet delivered to it are dropped."""
    removed = _run(config, data_dir, lambda hooks, _: hooks.remove(endpoint_id))
    if json_output:
        from overnight.webhooks.objects import endpoint_object

        print_json(endpoint_object(removed))
    else:
        typer.echo(f"removed {removed.id} ({removed.url})")


@webhooks_app.command("rotate")
def rotate(
    endpoint_id: EndpointArgument,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Make a new signing secret and print it; the old one keeps signing
    beside it for `webhook_rotation_overlap` seconds."""
    rotated = _run(config, data_dir, lambda hooks, _: hooks.rotate(endpoint_id))
    if json_output:
        from overnight.webhooks.objects import with_secret

        print_json(with_secret(rotated))
        return
    note(
        f"rotated {rotated.endpoint.id}; the previous secret also signs until "
        f"{when(rotated.endpoint.rotating_until)}. The new secret, shown only now:"
    )
    typer.echo(rotated.secret)


def _run(
    config: Path | None, data_dir: Path | None, use: Callable[[Webhooks, Store], Awaitable[T]]
) -> T:
    """One use case on the webhook endpoints of the store the settings name."""
    from overnight.webhooks.endpoints import Webhooks

    settings: Settings = load_cli_settings(config, data_dir=data_dir)
    return run_on_store(settings, lambda store: use(Webhooks(store, settings), store))
