"""The one file hash (a replaced file is hashed again, never answered from memory) and the one UTC clock."""
from __future__ import annotations

import datetime as dt
import hashlib
import re

from xraycore.common.files import atomic_write_text
from xraycore.common.hashing import sha256_of_file
from xraycore.common.timestamps import name_stamp, utc_timestamp


def test_file_hash_is_the_sha256_of_its_bytes_and_follows_a_replaced_file(tmp_path):
    path = tmp_path / "model.safetensors"
    atomic_write_text(path, "first weights")
    assert sha256_of_file(path) == hashlib.sha256(b"first weights").hexdigest()
    atomic_write_text(path, "other weights")  # same size, replaced as every writer replaces: a new file
    assert sha256_of_file(str(path)) == hashlib.sha256(b"other weights").hexdigest()


def test_timestamps_are_iso_utc_with_seconds_and_the_audit_trail_keeps_milliseconds():
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    stamp = utc_timestamp()
    after = dt.datetime.now(dt.timezone.utc)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", stamp)
    moment = dt.datetime.fromisoformat(stamp)
    assert moment.utcoffset() == dt.timedelta(0)
    assert before <= moment <= after, "the clock is now, in UTC (ordered, not timed)"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", utc_timestamp("milliseconds"))
    assert re.fullmatch(r"\d{8}-\d{6}", name_stamp())
