"""The database (SQLAlchemy 2 + Alembic): radiologists' reads, scored films, kept film pixels, settings; SQLite
by default, PostgreSQL by URL. Imports nothing of ours but common.

    database  Opening the store: the database URL, the engine (SQLite or PostgreSQL) and its schema upgraded
              to head
    schema    The store's tables (SQLAlchemy 2 Core): reads, scored films, kept film pixels, settings

The functions and classes named below are importable from this package too; each is imported from its
module on first use, so importing the package is cheap and pulls in no torch.
"""

from __future__ import annotations

from xraycore.common.lazy import lazy_exports

_EXPORTS = {
    "database": ("StoreUnavailable", "Store", "default_url", "store_url", "open_store"),
    "schema": ("UTCDateTime",),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
