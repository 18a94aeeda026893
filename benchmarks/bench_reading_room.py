"""The reading room: a Diagnose-sized batch, DICOM results, the PDF report and a PACS round trip, with models/default.

Figures: seconds to the first scored batch and per image over a batch of full-resolution JPEGs (what the
Diagnose progress bar shows); milliseconds to build one SR and one overlay capture; seconds to build the
PDF of the batch; and, against a local Orthanc (Debian's, started here on loopback ports), seconds per image
for find + fetch (C-GET) + score + store back (C-STORE of the SR and overlay).
Usage: python benchmarks/bench_reading_room.py [--model models/default] [--n 100] [--pacs-n 12]
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import DATA, REPO, report  # noqa: E402
from tests.helpers.orthanc import AET, orthanc_binary, start_orthanc  # noqa: E402
from xraycore import Predictor  # noqa: E402
from xraycore.inference import provenance  # noqa: E402
from xraycore.inference import display  # noqa: E402
from xraycore.io.intended_use import SkipNonFrontal  # noqa: E402
from xraycore.reading_room import dicom_out, pacs, pacs_scan  # noqa: E402
from xraycore.reading_room import pdf_report as report_pdf  # noqa: E402

BATCH = 8  # as pages/diagnose.py


def as_dicom(path: Path, study: str, series: str, number: int) -> bytes:
    """A JPEG scan as an uncompressed DX DICOM (8-bit), in the given study and series."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    pixels = np.asarray(Image.open(path).convert("L"))
    dataset = Dataset()
    dataset.SOPClassUID, dataset.SOPInstanceUID = DigitalXRayImageStorageForPresentation, generate_uid()
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study, series
    dataset.PatientName, dataset.PatientID, dataset.StudyDate = "Bench^Patient", "BENCH-1", "20260110"
    dataset.Modality, dataset.ViewPosition, dataset.BodyPartExamined = "DX", "PA", "CHEST"
    dataset.SeriesNumber, dataset.InstanceNumber = 1, number
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated = dataset.BitsStored = 8
    dataset.HighBit, dataset.PixelRepresentation = 7, 0
    dataset.PixelData = pixels.tobytes()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(REPO / "models" / "default"))
    parser.add_argument("--images", default=str(DATA / "chest_xray_fullres" / "PNEUMONIA"))
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--pacs-n", type=int, default=12)
    args = parser.parse_args()
    folder = sorted(Path(args.images).iterdir())
    files = [folder[i % len(folder)] for i in range(args.n)]  # the folder's scans, cycled to a batch of n
    predictor = Predictor(args.model, device="cpu")
    model = provenance.of_model(args.model)
    result: dict = {"images": len(files)}

    # Diagnose-sized batch: the page scores BATCH images per progress step.
    started = time.perf_counter()
    first_batch = None
    kept = []
    for index, prediction in enumerate(predictor.predict_sources(((str(f), f) for f in files), cam="gradcam",
                                                                 batch_size=BATCH), start=1):
        kept.append(display.for_display(prediction))
        if index == min(BATCH, len(files)):
            first_batch = time.perf_counter() - started
    total = time.perf_counter() - started
    result["batch"] = {"first_progress_step_s": round(first_batch or total, 2), "total_s": round(total, 1),
                       "per_image_ms": round(1000 * total / len(files), 1)}

    # DICOM results and the PDF.
    source = as_dicom(files[0], "1.2.3.4", "1.2.3.4.1", 1)
    header = dicom_out.read_source(source)
    finding = dicom_out.Finding.from_display(kept[0], predictor.threshold, predictor.operating_point)
    overlay = np.asarray(Image.new("RGB", (1024, 1024)))
    started = time.perf_counter()
    for _ in range(10):
        dicom_out.to_bytes(dicom_out.structured_report(header, finding, model))
    sr_ms = 100 * (time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(10):
        dicom_out.to_bytes(dicom_out.overlay_capture(header, overlay, model))
    result["dicom_results_ms"] = {"sr": round(sr_ms, 1), "overlay_1024px": round(100 * (time.perf_counter() - started), 1)}
    started = time.perf_counter()
    pdf = report_pdf.build(kept, threshold=predictor.threshold, operating_point=predictor.operating_point, model=model)
    result["pdf"] = {"pages": len(kept) + 1, "build_s": round(time.perf_counter() - started, 2),
                     "size_mb": round(len(pdf) / 1e6, 1)}

    # A PACS round trip against a local Orthanc.
    if orthanc_binary() is not None and args.pacs_n:
        with tempfile.TemporaryDirectory() as folder:
            server = start_orthanc(Path(folder))
            try:
                study, series = "1.2.826.0.1.3680043.8.498.7777", "1.2.826.0.1.3680043.8.498.7777.1"
                for number, path in enumerate(files[: args.pacs_n], start=1):  # full-resolution scans
                    server.upload(as_dicom(path, study, series, number))
                node = pacs.Node("127.0.0.1", server.dicom_port, AET)
                started = time.perf_counter()
                studies = pacs.find_studies(node, "20260101")
                items = list(pacs_scan.scan(node, predictor, studies, skip=SkipNonFrontal(), store_results=True, model=model))
                elapsed = time.perf_counter() - started
                scored = [item for item in items if isinstance(item, pacs_scan.Scored)]
                result["pacs_round_trip"] = {"images": len(scored), "stored": sum(bool(s.stored) for s in scored),
                                             "total_s": round(elapsed, 1),
                                             "per_image_s": round(elapsed / max(1, len(scored)), 2)}
            finally:
                server.stop()
    report("reading_room", result)


if __name__ == "__main__":
    main()
