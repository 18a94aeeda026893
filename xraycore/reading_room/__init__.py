"""The radiologist's side of the hospital: PACS networking, worklist, DICOM results, PDFs.

    dicom_out     Results as DICOM, filed in the source study: a Comprehensive SR and a Secondary Capture of
                  the overlay
    pacs          A PACS connection (DICOM networking through pynetdicom): check a node, find chest studies
                  and their series, fetch images, store results back
    pacs_net      DICOM associations with a PACS node (pynetdicom): opened, refused or unreachable said
                  plainly, released
    pacs_nodes    The PACS nodes this server may talk to: a list an administrator keeps, never a host typed on
                  a page
    pacs_results  This workbench's own results in a PACS: recognised when a study is listed, and never filed
                  twice
    pacs_scan     The whole round on a PACS: find the chest series of some studies, fetch them, score every
                  image through the Predictor, and (when asked) file each result back: what `python -m
                  xraycore pacs` and the Worklist page run
    pdf_report    A printable report (PDF) for one image or a batch: what a reader files or hands on
    worklist      The triage worklist behind the Worklist page: a PACS's chest images, scored, most probable
                  first

The functions and classes named below are importable from this package too; each is imported from its
module on first use, so importing the package is cheap and pulls in no torch.
"""

from __future__ import annotations

from xraycore.common.lazy import lazy_exports

_EXPORTS = {
    "dicom_out": ("DicomOutError", "Finding", "read_source", "structured_report", "overlay_capture",
        "labelled", "to_bytes", "result_uids", "results_for", "write_results", "PacsFilm", "may_download",
        "display_report", "display_capture"),
    "pacs": ("Study", "Series", "Notice", "echo", "check_date", "find_studies", "find_series",
        "chest_image_series", "retrieve", "store", "result_kind", "is_own_series", "dicom_int"),
    "pacs_net": ("PacsError", "make_ae", "association", "reachable", "accepted", "find"),
    "pacs_nodes": ("Node", "nodes_file", "parse_node", "load_nodes", "resolve", "from_command_line",
        "name_of", "require_configured", "exchange", "add_node", "remove_node"),
    "pacs_results": ("is_own", "already_stored"),
    "pacs_scan": ("Scored", "scan"),
    "pdf_report": ("build",),
    "worklist": ("Entry", "study_rows", "collect", "ordered", "rows", "results_of", "Sent", "send_back",
        "fetch"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
