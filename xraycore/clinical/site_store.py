"""The product's store: opened where the runs live unless ``$XRAY_DB_URL`` names another, and the site's name.

The store room takes the runs folder from its caller (it imports nothing of ours but common); this is the one
caller that knows it (:func:`xraycore.runs.directory.runs_root`), so the app, the CLI and monitoring open the
same database.
"""
from __future__ import annotations

import os
import socket

from xraycore.runs.directory import runs_root
from xraycore.store.database import Store, open_store

SITE_ENV = "XRAY_SITE_NAME"


def open_site_store(url: str | None = None) -> Store:
    """The store: ``url``, else ``$XRAY_DB_URL``, else ``xray.db`` beside the runs folder
    (StoreUnavailable, one sentence, when it cannot be opened)."""
    return open_store(url, runs_dir=runs_root())


def site_name() -> str:
    """The site the records belong to: ``$XRAY_SITE_NAME``, else this machine's host name."""
    return os.environ.get(SITE_ENV) or socket.gethostname() or "local"
