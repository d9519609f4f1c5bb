"""Metadata storage: a set of named operations, each one transaction.

`SqlStore` implements them on SQLAlchemy Core, for SQLite (the default) and
PostgreSQL (to scale out). Transitions are guarded in WHERE clauses, so two
processes racing on one row cannot both win. Consumers type against the
Protocols in `contracts` (`Store` and one per consumer), not `SqlStore`.
"""

from overnight.store.contracts import Store
from overnight.store.sql import SqlStore, open_store

__all__ = ["SqlStore", "Store", "open_store"]
