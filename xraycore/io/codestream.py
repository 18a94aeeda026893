"""Why a compressed DICOM frame did not decode, read from the frame's own bytes: JPEG, JPEG-LS and JPEG 2000.

pydicom's decoders fail with their own words, which name libraries and may quote values; the reader instead
walks the codestream's header (start markers, frame size, scan parameters, JP2 boxes) and compares it with the
DICOM header, so the refusal says in plain words what is wrong. Split from :mod:`xraycore.io.dicom`, which calls
these only after every installed decoder has refused a frame (and :func:`jp2_boxes_never_end` before decoding).
Pure functions over bytes: no dataset, no pydicom call besides its transfer-syntax lists.
"""
from __future__ import annotations

import struct

JP2_BOX_LOOP = "its JPEG 2000 file structure is damaged (a box of length zero before the image data)"
_DAMAGED_START = "its compressed data does not begin like {} data, so it is damaged or mislabelled"
_SIZE_MISMATCH = ("the image size recorded inside its compressed data differs from the one in the DICOM header, "
                  "so the data is damaged")
_CUT_SHORT = "its compressed data ends too early, so the file is incomplete"
_JPEG_BROKEN_SCAN = ("its compressed data breaks a rule of the JPEG standard (wrong scan parameters, a fault of "
                     "some older software) that the decoders installed here do not tolerate")
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF,
                          0xF7})  # F7: JPEG-LS
_MARKERS_WITHOUT_LENGTH = frozenset({0x01, *range(0xD0, 0xDA)})  # TEM, RSTn, SOI, EOI


def jp2_boxes_never_end(frame: bytes) -> bool:
    """Whether pydicom (3.0.2, pixels.utils.get_j2k_parameters) would walk this frame's JP2 boxes forever: it
    steps from box to box by their lengths until the codestream box (jp2c) and never moves on from a length
    of 0. A damaged upload must not hang the reader, so such a frame is refused before decoding."""
    if not frame.startswith(b"\x00\x00\x00\x0cjP  "):
        return False
    offset = 12  # after the signature box, as pydicom
    while offset < len(frame):
        if frame[offset + 4:offset + 8] == b"jp2c":
            return False
        length = int.from_bytes(frame[offset:offset + 4], "big")
        if length == 0:
            return True
        offset += length
    return False


def codestream_problem(frame: bytes, uid: str, rows: int, columns: int) -> str | None:
    """What is wrong with a JPEG-family or JPEG 2000 codestream's header, or None if nothing is seen."""
    from pydicom.uid import (JPEG2000TransferSyntaxes, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSTransferSyntaxes,
                             JPEGTransferSyntaxes)

    if uid in JPEGTransferSyntaxes or uid in JPEGLSTransferSyntaxes:
        return _jpeg_problem(frame, rows, columns, sequential=uid in (JPEGBaseline8Bit, JPEGExtended12Bit))
    if uid in JPEG2000TransferSyntaxes:
        return _jpeg2000_problem(frame, rows, columns)
    return None


def _jpeg_problem(frame: bytes, rows: int, columns: int, sequential: bool) -> str | None:
    """Walk the marker segments up to the first scan: start marker, frame size, scan parameters."""
    if frame[:2] != b"\xff\xd8":
        return _DAMAGED_START.format("JPEG")
    position = 2
    while position + 4 <= len(frame):
        if frame[position] != 0xFF:
            return _DAMAGED_START.format("JPEG")
        marker = frame[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _MARKERS_WITHOUT_LENGTH:
            position += 2
            continue
        length = int.from_bytes(frame[position + 2:position + 4], "big")
        segment = frame[position + 4:position + 2 + length]
        if length < 2 or len(segment) < length - 2:
            return _CUT_SHORT
        if marker in _SOF_MARKERS and len(segment) >= 5:
            height, width = int.from_bytes(segment[1:3], "big"), int.from_bytes(segment[3:5], "big")
            if width != columns or height not in (0, rows):  # height 0: given later by a DNL segment
                return _SIZE_MISMATCH
        elif marker == 0xDA:  # start of scan: components, then spectral selection start and end
            end = 3 + 2 * segment[0] if segment else len(segment) + 1
            if sequential and len(segment) >= end and tuple(segment[end - 2:end]) != (0, 63):
                return _JPEG_BROKEN_SCAN
            return None
        position += 2 + length
    return _CUT_SHORT


def _jpeg2000_problem(frame: bytes, rows: int, columns: int) -> str | None:
    """The SIZ segment (right after the start of a codestream, possibly inside a JP2 file) against the header."""
    marker = b"\xff\x4f\xff\x51"  # SOC then SIZ
    start = 0 if frame.startswith(marker) else frame.find(marker) if frame[4:8] == b"jP  " else -1
    if start < 0:
        return _DAMAGED_START.format("JPEG 2000")
    size = frame[start + 8:start + 24]  # after the markers: Lsiz, Rsiz, then Xsiz, Ysiz, XOsiz, YOsiz
    if len(size) < 16:
        return _CUT_SHORT
    width, height, left, top = struct.unpack(">4I", size)
    return _SIZE_MISMATCH if (width - left, height - top) != (columns, rows) else None
