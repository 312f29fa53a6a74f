"""MongoDB access: one repository per collection. Resolvers and the ingest pipeline call these,
never `db[...]` directly."""

from contact_monitor.storage.db import Storage

__all__ = ["Storage"]
