"""The film's key in the store: every Prediction carries the grey pixels at the network's load size and their
sha256, so a read and a scored-film row of the same picture meet whatever file name or header carried it."""
from __future__ import annotations

import io

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from tests.helpers.synthetic import xray_like
from xraycore.common.hashing import sha256_of_pixels
from xraycore.inference.prediction import bytes_source
from xraycore.inference.predictor import Predictor


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def dicom_bytes(pixels: np.ndarray, patient: str) -> bytes:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = patient, f"PID-{len(patient)}", "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_the_same_picture_has_one_key_whatever_carries_it_and_another_picture_another(tiny_run):
    rng = np.random.default_rng(3)
    film, other = (xray_like(rng, 96, pneumonia=flag) for flag in (True, False))
    predictor = Predictor(tiny_run, device="cpu")
    as_png, renamed, different, as_dicom, other_header = predictor.predict_sources([
        ("person12_bacteria.png", bytes_source(png_bytes(film))), ("anything.png", bytes_source(png_bytes(film))),
        ("person12_bacteria.png", bytes_source(png_bytes(other))),
        ("a.dcm", bytes_source(dicom_bytes(film, "Doe^Jane"))), ("b.dcm", bytes_source(dicom_bytes(film, "Roe^Richard")))])
    assert all(p.ok for p in (as_png, as_dicom, renamed, different, other_header))
    load = predictor.networks[0].load_size
    assert as_png.input_pixels.shape == (load, load) and as_png.input_pixels.dtype == np.uint8
    assert as_png.film_sha256 == sha256_of_pixels(as_png.input_pixels)
    assert as_png.film_sha256 == renamed.film_sha256 and as_dicom.film_sha256 == other_header.film_sha256
    assert different.film_sha256 != as_png.film_sha256
    assert len(as_png.film_sha256) == 64 and "person12" not in as_png.film_sha256
