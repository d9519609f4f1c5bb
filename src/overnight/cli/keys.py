"""`overnight keys create|list|revoke`: API keys, made on the server's own
store (no API involved), shown once, stored only as hashes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, TypeVar

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
    from overnight.domain.keys import ApiKey

T = TypeVar("T")

keys_app = typer.Typer(
    rich_markup_mode="markdown",
    help="API keys: made here, shown once, stored only as hashes.",
    no_args_is_help=True,
)
TenantOption = Annotated[
    str | None, typer.Option("--tenant", help="The tenant the keys act for.", show_default=False)
]


@keys_app.command("create")
def keys_create(
    tenant: TenantOption = None,
    admin: Annotated[
        bool, typer.Option("--admin", help="An admin key: sees every tenant, sets quotas.")
    ] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Make a key and print it (only this once; only its hash is kept)."""
    from overnight.tenants import create_key

    settings = load_cli_settings(config, data_dir=data_dir)
    made = run_on_store(settings, lambda store: create_key(store, tenant=tenant, admin=admin))
    if json_output:
        print_json({**key_object(made.key), "key": made.secret})
        return
    who = f"tenant {made.key.tenant}" if made.key.tenant else "admin"
    note(f"created {made.key.id} ({who}); keep the key now, it is not shown again:")
    typer.echo(made.secret)


@keys_app.command("list")
def keys_list(
    tenant: TenantOption = None,
    revoked: Annotated[bool, typer.Option("--revoked", help="Include revoked keys.")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """List keys made with `keys create` (without their secrets)."""
    settings = load_cli_settings(config, data_dir=data_dir)
    keys = run_on_store(
        settings, lambda store: store.list_api_keys(tenant, include_revoked=revoked)
    )
    if json_output:
        print_json([key_object(key) for key in keys])
        return
    rows = [("ID", "KEY", "ROLE", "TENANT", "CREATED", "REVOKED")]
    rows += [
        (
            key.id,
            key.shown + "...",
            key.role.value,
            key.tenant or "-",
            when(key.created_at),
            when(key.revoked_at),
        )
        for key in keys
    ]
    columns(rows)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[
        str | None,
        typer.Argument(help="The key's id (or its shown prefix).", show_default=False),
    ] = None,
    tenant: TenantOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Revoke one key, or with --tenant alone every key of that tenant. A
    revoked key is refused from the next request on."""
    from overnight.tenants import revoke_keys

    settings = load_cli_settings(config, data_dir=data_dir)
    revoked = run_on_store(settings, lambda store: revoke_keys(store, key_id=key_id, tenant=tenant))
    if json_output:
        print_json([key_object(key) for key in revoked])
        return
    for key in revoked:
        typer.echo(f"revoked {key.id} ({key.shown}...)")


def key_object(key: ApiKey) -> dict[str, Any]:
    """A key as `--json` prints it: never its secret, only the prefix shown
    in lists (`keys create` adds the secret, that once)."""
    return {
        "object": "api_key",
        "id": key.id,
        "shown": key.shown,
        "role": key.role.value,
        "tenant": key.tenant,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    }
