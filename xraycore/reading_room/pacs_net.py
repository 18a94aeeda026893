"""DICOM associations with a PACS node (pynetdicom): opened, refused or unreachable said plainly, released.

The plumbing under :mod:`pacs` (finding, fetching, storing back) and :mod:`pacs_results`, kept apart so
that module stays readable. Nothing here checks who asks or which node: :func:`pacs_nodes.exchange`
does, before any of this runs.
"""
from __future__ import annotations

import socket
from contextlib import contextmanager
from typing import Any, Iterator

from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from xraycore.reading_room.pacs_nodes import Node


class PacsError(RuntimeError):
    """The node cannot be used at all (unreachable, association refused or aborted); the text says why."""


def make_ae(node: Node) -> AE:
    ae = AE(ae_title=node.calling_aet)
    ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = node.timeout
    return ae


@contextmanager
def association(node: Node, ae: AE, **options: Any) -> Iterator[Association]:
    """An established association, released afterwards; PacsError with the reason when there is none."""
    try:
        assoc = ae.associate(node.host, int(node.port), ae_title=node.called_aet, **options)
    except OSError:  # a host name that does not resolve
        raise PacsError(f"cannot reach the PACS at {node.host}:{node.port}: the host is unknown") from None
    if not assoc.is_established:
        # pynetdicom reports a failed connection as an abort, and so, at times, a rejection whose socket closed
        # first: whatever answered is a refusal, nothing answering is an unreachable node.
        if not assoc.is_rejected and not reachable(node):
            raise PacsError(f"cannot reach the PACS at {node.host}:{node.port}: nothing answered (wrong host or "
                            "port, the PACS is down, or a firewall blocks it)")
        raise PacsError(f"the PACS {node} refused the association: check the called AE title ({node.called_aet}), "
                        f"that it accepts this workbench ({node.calling_aet}) and that it is a DICOM port")
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def reachable(node: Node) -> bool:
    try:
        with socket.create_connection((node.host, int(node.port)), timeout=min(node.timeout, 5.0)):
            return True
    except OSError:
        return False


def accepted(assoc: Association, sop_class: str) -> bool:
    return any(context.abstract_syntax == sop_class for context in assoc.accepted_contexts)


def find(node: Node, query: Dataset) -> list[Dataset]:
    ae = make_ae(node)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    with association(node, ae) as assoc:
        if not accepted(assoc, StudyRootQueryRetrieveInformationModelFind):
            raise PacsError(f"the PACS {node} does not answer queries (C-FIND, study root)")
        found, failure = [], None
        for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            code = getattr(status, "Status", None)
            if code is None:
                failure = "the query got no answer in time"
                break
            if code in (0xFF00, 0xFF01) and identifier is not None:
                found.append(identifier)
            elif code != 0x0000:
                failure = f"the query was refused (status 0x{code:04X})"
        if failure:
            raise PacsError(f"the PACS {node}: {failure}")
        return found
