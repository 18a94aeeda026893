"""The product's door to radiologists' reads: record, correct and delete a read, and the "keep read films for
site learning" setting; each checked (:mod:`xraycore.access`) and audited here, never only on a page.

A read is what a reader decided about a film the model scored: their final read (one of the model's classes,
``other`` finding or ``uncertain``), whether it agrees with the model's call, what it rests on (report, CT,
follow-up, consensus) and whether the heat map was on the relevant region. The film is known by the sha256 of
its grey pixels at the network's input size; those pixels are kept with the read only while the setting is on
(on by default for the one local user and at a terminal, off by default when served on a network, where
visitors are signed in or anonymous). Readers correct or delete their own reads; admins anyone's. Audit
lines name the read's number and the decision, never a file. Torch-free; the store does the writing.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from xraycore.access import policy as access
from xraycore.common.hashing import sha256_of_pixels
from xraycore.store import reads as store_reads
from xraycore.store import settings as store_settings
from xraycore.store.database import Store
from xraycore.store.schema import OTHER_FINDING, REFERENCES, UNCERTAIN

KEEP_FILMS = "keep_read_films_for_site_learning"
KEEP_FILMS_LABEL = "keep read films for site learning"
ON, OFF = "on", "off"
MODEL_FACTS = store_reads.MODEL_FACTS


def film_sha256(pixels: np.ndarray) -> str:
    """The film's identity in the store: sha256 of its shape and grey uint8 pixels at the network input size."""
    pixels = np.ascontiguousarray(pixels)
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError("a film's pixels are one grey uint8 image at the network input size")
    return sha256_of_pixels(pixels)


def read_choices(classes: Sequence[str]) -> tuple[str, ...]:
    """What a reader may answer: the model's classes, then 'other' (another finding) and 'uncertain'."""
    return (*classes, OTHER_FINDING, UNCERTAIN)


def keep_films_default(identity: access.Identity | None) -> bool:
    """On for the one local user (loopback demo) and at a terminal; off when served on a network."""
    return identity is not None and identity.via in (access.LOCAL, access.TERMINAL)


def keep_films(store: Store, identity: access.Identity | None = None) -> bool:
    """Whether read films' pixels are kept: the admin's latest choice, else :func:`keep_films_default`."""
    chosen = store_settings.get_setting(store, KEEP_FILMS)
    return keep_films_default(access.acting(identity)) if chosen is None else chosen == ON


def set_keep_films(store: Store, on: bool, identity: access.Identity | None = None) -> None:
    """Turn keeping read films on or off: admins only, refused and audited in here, every change audited."""
    old = store_settings.get_setting(store, KEEP_FILMS)
    with access.guarded("reads.keep_films", identity, access.SITE_SETTINGS, target=KEEP_FILMS_LABEL, old=old,
                        new=ON if on else OFF) as line:
        store_settings.set_setting(store, KEEP_FILMS, ON if on else OFF, line.identity.user)


def keep_films_history(store: Store) -> list[dict[str, Any]]:
    """Every change of the setting: value, who, when (oldest first)."""
    return store_settings.setting_history(store, KEEP_FILMS)


def record_read(store: Store, facts: Mapping[str, Any], read: str, identity: access.Identity | None, *,
                classes: Sequence[str], film_pixels: np.ndarray, reference: str | None = None,
                heatmap_on_region: bool | None = None, site: str | None = None) -> int:
    """Record ``identity``'s read of a scored film. ``facts``: the model's answer (:data:`MODEL_FACTS`:
    model name, version, weights sha256, operating point, probability, ``ai_call`` = the model's call or None).
    ``film_pixels``: the grey uint8 film at the network input size (hashed; kept only while the setting is
    on). Returns the read's number."""
    _check_choice(read, reference, classes)
    model = {"name": facts.get("model_name"), "version": facts.get("model_version"),
             "sha256": facts.get("weights_sha256")}
    with access.guarded("reads.record", identity, access.RECORD_READS, new=read, model=model,
                        operating_point=facts.get("operating_point")) as line:
        ai_call = facts.get("ai_call")
        keep = keep_films(store, line.identity)
        read_id = store_reads.add_read(
            store, film_sha256=film_sha256(film_pixels), read=read, reader=line.identity.user,
            role=line.identity.role, agrees=None if ai_call is None else read == ai_call, reference=reference,
            heatmap_on_region=heatmap_on_region, site=site, pixels=film_pixels if keep else None,
            **{key: facts.get(key) for key in MODEL_FACTS})
        line.note(target=f"read {read_id}", counts={"film_kept": int(keep)})
    return read_id


def correct_read(store: Store, read_id: int, read: str, identity: access.Identity | None, *,
                 classes: Sequence[str] | None = None, reference: str | None = None,
                 heatmap_on_region: bool | None = None) -> int:
    """Supersede read ``read_id`` with a corrected read (the original stays as it was): its reader, or an
    admin. Returns the new read's number."""
    if classes is not None:
        _check_choice(read, reference, classes)
    with access.guarded("reads.correct", identity, access.RECORD_READS, target=f"read {read_id}", new=read) as line:
        line.note(old=_may_change(store, read_id, line.identity))
        new_id = store_reads.correct(store, read_id, read=read, reader=line.identity.user, role=line.identity.role,
                                     reference=reference, heatmap_on_region=heatmap_on_region)
        line.note(target=f"read {read_id} -> read {new_id}")
    return new_id


def delete_read(store: Store, read_id: int, identity: access.Identity | None) -> int:
    """Delete read ``read_id`` (a tombstone row; the film's kept pixels are removed): its reader, or an admin."""
    with access.guarded("reads.delete", identity, access.RECORD_READS, target=f"read {read_id}") as line:
        _may_change(store, read_id, line.identity)
        return store_reads.delete_read(store, read_id, reader=line.identity.user, role=line.identity.role)


def _may_change(store: Store, read_id: int, identity: access.Identity) -> str | None:
    """The read's current value, when ``identity`` may change it (its reader, or an admin)."""
    found = store_reads.get_read(store, read_id)
    if found is None:
        raise store_reads.ReadNotCurrent(f"There is no read number {read_id}.")
    if found["reader"] != identity.user and not identity.can(access.MANAGE_READS):
        raise access.AccessDenied("Readers may change only their own reads; ask an administrator.")
    return found["read"]


def _check_choice(read: str, reference: str | None, classes: Sequence[str]) -> None:
    choices = read_choices(classes)
    if read not in choices:
        raise ValueError(f"A read is one of {', '.join(choices)}, not {read!r}.")
    if reference is not None and reference not in REFERENCES:
        raise ValueError(f"A reference is one of {', '.join(REFERENCES)}, not {reference!r}.")
