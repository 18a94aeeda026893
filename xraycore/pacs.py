"""PACS exchange: query, retrieve and store-back, each checked and audited. No PACS is connected yet.

The functions exist so the permission and the audit line are settled before a DICOM network client
(C-FIND / C-MOVE / C-STORE) arrives: query and retrieve need the reader role, store-back and the PACS
settings need an admin, and every attempt is one audit line holding counts only (never a patient name,
ID or accession number). Until a PACS is configured each raises :class:`PacsUnavailable` after its line.
"""
from __future__ import annotations

from typing import Any

from . import access, audit


class PacsUnavailable(RuntimeError):
    """No PACS is configured on this server."""


NOT_CONFIGURED = "No PACS is configured on this server."


def query(identity: access.Identity | None, **criteria: Any) -> list[dict[str, Any]]:
    """Find studies (reader). ``criteria`` go to the PACS only; the audit line keeps their count."""
    with audit.guarded("pacs.query", identity, access.PACS_QUERY, counts={"criteria": len(criteria)}):
        raise PacsUnavailable(NOT_CONFIGURED)


def retrieve(identity: access.Identity | None, study_uids: list[str]) -> list[bytes]:
    """Fetch studies for scoring (reader); the audit line keeps how many, not which."""
    with audit.guarded("pacs.retrieve", identity, access.PACS_QUERY, counts={"studies": len(study_uids)}):
        raise PacsUnavailable(NOT_CONFIGURED)


def store(identity: access.Identity | None, results: list[dict[str, Any]]) -> None:
    """Send results back to the PACS (admin); the audit line keeps how many."""
    with audit.guarded("pacs.store", identity, access.PACS_STORE, counts={"results": len(results)}):
        raise PacsUnavailable(NOT_CONFIGURED)


def save_settings(identity: access.Identity | None, settings: dict[str, Any]) -> None:
    """Change the PACS connection (admin); the audit line keeps which settings changed, not their values."""
    with audit.guarded("pacs.settings", identity, access.PACS_SETTINGS, new={"keys": sorted(settings)}):
        raise PacsUnavailable("PACS settings cannot be stored yet: no PACS client is installed.")
