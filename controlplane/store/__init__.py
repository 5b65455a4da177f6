"""The desired state: one `Store` over SQLite (embedded default) or PostgreSQL (HA replicas)."""
from .store import Store, open_store

__all__ = ["Store", "open_store"]
