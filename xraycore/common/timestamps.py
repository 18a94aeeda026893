"""The one clock xraycore writes: ISO-8601 UTC timestamps, and the compact stamp in generated names.

Every time stored on disk (status.json, log.txt, job records, operating-point history, releases, external
evaluations, self-check references, the audit trail) comes from :func:`utc_timestamp`, so they all read alike
and compare without guessing a zone. Whole seconds, except the audit trail, which keeps milliseconds (its
lines have always carried them). Readers use ``datetime.fromisoformat``, which reads these and the
local-time-with-offset stamps older runs and jobs hold. :func:`name_stamp` is the sortable
``YYYYmmdd-HHMMSS`` in new run ids and study names, in local time as before: people read it as the clock on
their wall, and nothing parses it.
"""
from __future__ import annotations

import datetime as dt
from typing import Literal

Timespec = Literal["seconds", "milliseconds"]


def utc_now() -> dt.datetime:
    """Now, as an aware datetime in UTC."""
    return dt.datetime.now(dt.timezone.utc)


def utc_timestamp(timespec: Timespec = "seconds") -> str:
    """Now in ISO-8601 UTC, e.g. ``2026-12-06T18:09:01+00:00`` (``timespec="milliseconds"``:
    ``2026-12-06T18:09:01.123+00:00``)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec=timespec)


def name_stamp() -> str:
    """Local time as ``20261206-180901``: sorts as text; what run ids and study names begin with."""
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S")
