"""Metadata storage: a set of named operations, each one transaction.

`SqlStore` implements them on SQLAlchemy Core, for SQLite (the default) and
PostgreSQL (to scale out). Transitions are guarded in WHERE clauses, so two
processes racing on one row cannot both win.
"""

from overnight.store.sql import SqlStore, open_store

__all__ = ["SqlStore", "open_store"]
