"""The database (SQLAlchemy 2 + Alembic): radiologists' reads, scored films, kept film pixels, settings; SQLite
by default, PostgreSQL by URL. Imports nothing of ours but common.

    database      Opening the store: the database URL, the engine (SQLite or PostgreSQL) and its schema
                  upgraded to head
    reads         Radiologists' reads in the store: added, corrected (a new row supersedes the old), deleted
                  (a tombstone row, and the film's kept pixels removed), and listed
    schema        The store's tables (SQLAlchemy 2 Core): reads, scored films, kept film pixels, settings
    scored_films  A row per scored film (issue 30's monitoring): recorded, and read back as numpy columns
    settings      Settings kept in the store (such as "keep read films for site learning"): every change is a
                  new row, so the history stays and the latest row wins

The functions and classes named below are importable from this package too; each is imported from its
module on first use, so importing the package is cheap and pulls in no torch.
"""

from __future__ import annotations

from xraycore.common.lazy import lazy_exports

_EXPORTS = {
    "database": ("StoreUnavailable", "Store", "default_url", "store_url", "open_store"),
    "reads": ("ReadNotCurrent", "add_read", "correct", "delete_read", "get_read", "current_reads",
        "all_reads", "kept_pixels", "kept_films"),
    "schema": ("UTCDateTime",),
    "scored_films": ("record_scored_film", "record_scored_films", "scored_rows"),
    "settings": ("get_setting", "set_setting", "setting_history"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
