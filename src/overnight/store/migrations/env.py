"""Alembic environment. overnight runs migrations itself at start-up
(`store.migrate`), passing an open connection in `config.attributes`."""

from alembic import context

from overnight.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only `alembic` on the command line
    raise RuntimeError("run migrations through overnight.store.migrate.upgrade()")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
