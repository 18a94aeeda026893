"""Where the CLI's words go: results meant for people or programs on stdout, messages and progress on stderr.

One helper for every verb module, so ``--json`` output on stdout stays clean whichever verb prints.
"""
from __future__ import annotations

import sys


def say(text: str) -> None:
    """A message for the person at the terminal (stderr, flushed at once): never mixed into stdout's results."""
    print(text, file=sys.stderr, flush=True)
