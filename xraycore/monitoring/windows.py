"""How scored films are cut into windows: calendar weeks, calendar days (UTC), or N consecutive films.

Apart from the figures so that the page, the CLI and the benchmark cut the same stream the same way, and so
that a window is only positions into sorted arrays (100,000 rows cut in milliseconds, never row objects).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

WEEK, DAY = "week", "day"


@dataclass(frozen=True)
class Window:
    """Films ``first`` to ``stop - 1`` of the time-sorted stream; ``start``/``end`` the period they stand for."""

    first: int
    stop: int
    start: dt.datetime
    end: dt.datetime


def parse_window(text: str | int) -> str | int:
    """``week``, ``day`` or a whole number of films (at least 10); ValueError with one sentence otherwise."""
    if isinstance(text, int) or str(text).strip().isdigit():
        count = int(text)
        if count < 10:
            raise ValueError(f"A window of {count} films is too small to judge a distribution: use 10 or more.")
        return count
    if str(text).strip().lower() in (WEEK, DAY):
        return str(text).strip().lower()
    raise ValueError(f"--window takes week, day or a number of films, not {text!r}.")


def _period_start(moment: dt.datetime, window: str) -> dt.datetime:
    day = moment.astimezone(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - dt.timedelta(days=day.weekday()) if window == WEEK else day


def split(created: np.ndarray, window: str | int) -> list[Window]:
    """Windows over ``created`` (seconds since the epoch, UTC, sorted ascending), in order; empty periods skipped.

    A count window keeps a last, shorter remainder only when it holds at least half a window (a handful of
    films would raise false alarms).
    """
    seconds = np.asarray(created, dtype=np.float64)
    if seconds.size == 0:
        return []
    stamp = lambda value: dt.datetime.fromtimestamp(float(value), dt.timezone.utc)  # noqa: E731
    if isinstance(window, int):
        stops = list(range(window, seconds.size + 1, window))
        if seconds.size - (stops[-1] if stops else 0) >= max(1, window // 2):
            stops.append(seconds.size)
        firsts = [0, *stops[:-1]]
        return [Window(a, b, stamp(seconds[a]), stamp(seconds[b - 1])) for a, b in zip(firsts, stops)]
    length = dt.timedelta(days=7 if window == WEEK else 1)
    period = _period_start(stamp(seconds[0]), window)
    windows = []
    while True:
        first = int(np.searchsorted(seconds, period.timestamp(), side="left"))
        if first >= seconds.size:
            return windows
        period = _period_start(stamp(seconds[first]), window)  # jump over empty periods
        stop = int(np.searchsorted(seconds, (period + length).timestamp(), side="left"))
        windows.append(Window(first, stop, period, period + length))
        period += length
