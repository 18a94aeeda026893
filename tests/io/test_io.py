"""xraycore.io: every generated good or bad file gives exactly its expected outcome, with plain messages."""
from __future__ import annotations

import io
import logging
import pickle
import re
import struct
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageFile

from tests.helpers.corpus import CASE_NAMES, PHI, PHI_UIDS, SIDE, _bomb_png, chest_like, make_corpus
from xraycore.io import dicom as dicom_io
from xraycore.io import reader as xio
from xraycore.io.image import COLOURFULNESS_WARNING, ERROR_KINDS, MAX_PIXELS, XrayImage, XrayReadError, looks_like_colour_photo, to_uint8
from xraycore.io.reader import read_xray

SAFE_METADATA_KEYS = {"format", "width", "height", "bit_depth", "mode", "photometric", "modality", "view_position",
                      "body_part", "frames", "compression", "colourfulness", "warnings", "original_size", "dicom_guards"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def read_error(source, **kwargs) -> XrayReadError:
    with pytest.raises(XrayReadError) as caught:
        read_xray(source, **kwargs)
    return caught.value


def assert_plain_message(message: str) -> None:
    """A sentence for a clinician: no exception class names, tracebacks, library names or reprs."""
    assert len(message) > 20 and message[0].isupper() and message.endswith((".", "?")), message
    assert not re.search(r"\w+(Error|Exception)\b|Traceback|pydicom|PIL\b|Pillow|numpy|<class|0x[0-9a-f]", message), message


# ----------------------------------------------------------------------------- the corpus

def test_corpus_writes_every_case(tmp_path):
    cases = make_corpus(tmp_path / "corpus")
    assert all(case.path.is_file() for case in cases.values())


@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_each_case_gives_its_expected_outcome(corpus, case_name):
    case = corpus[case_name]
    if case.expected != "ok":
        error = read_error(case.path)
        assert error.kind == case.expected, str(error)
        assert_plain_message(str(error))
        return
    image = read_xray(case.path)
    assert image.pixels.dtype == np.float32 and image.pixels.ndim == 2
    assert 0.0 <= image.pixels.min() and image.pixels.max() <= 1.0
    assert image.pixels.max() - image.pixels.min() > 0.2  # real content, not a flat or crushed image
    assert (image.metadata["height"], image.metadata["width"]) == image.pixels.shape
    assert set(image.metadata) <= SAFE_METADATA_KEYS
    if case.warning is None:
        assert image.warnings == []
    else:
        assert any(case.warning in warning for warning in image.warnings), image.warnings


def test_not_image_messages_say_what_the_file_is(corpus):
    assert "text file" in str(read_error(corpus["text_named_png"].path))
    html = str(read_error(corpus["html_named_jpg"].path))
    assert "HTML" in html and ".jpg" in html
    assert "PDF" in str(read_error(corpus["pdf_named_dcm"].path))


def test_unsupported_dicom_compression_is_named(corpus):
    assert "JPEG Lossless" in str(read_error(corpus["dicom_jpeg_lossless"].path))
    assert "JPEG 2000" in str(read_error(corpus["dicom_jpeg2000_junk"].path))


# ----------------------------------------------------------------------------- values

def test_16bit_png_with_12bit_content_is_stretched_by_its_own_range(corpus):
    raw = np.asarray(Image.open(corpus["png_16bit"].path)).astype(np.float64)
    assert raw.max() <= 4095  # divided by 65535 this would be nearly black
    image = read_xray(corpus["png_16bit"].path)
    np.testing.assert_allclose(image.pixels, (raw - raw.min()) / (raw.max() - raw.min()), atol=1e-6)
    assert image.pixels.mean() > 0.3 and image.metadata["bit_depth"] == 16


def test_dicom_monochrome1_gets_rescale_then_window_then_inversion(corpus):
    path = corpus["dicom_monochrome1"].path
    raw = pydicom.dcmread(path).pixel_array.astype(np.float64)
    image = read_xray(path)
    # rescale intercept -1024, then the DICOM linear window (centre 1000, width 3000), then invert
    window = np.clip((raw - 1024 - 999.5) / 2999 + 0.5, 0, 1)
    np.testing.assert_allclose(image.pixels, 1 - window, atol=1e-5)
    lowest, highest = np.unravel_index(raw.argmin(), raw.shape), np.unravel_index(raw.argmax(), raw.shape)
    assert image.pixels[lowest] == pytest.approx(1.0) and image.pixels[highest] == pytest.approx(0.0)
    assert image.metadata["photometric"] == "MONOCHROME1" and image.metadata["bit_depth"] == 12


@pytest.mark.parametrize("photometric, shape, inverted", [
    ("MONOCHROME2", "IDENTITY", False), ("MONOCHROME2", "INVERSE", True),
    ("MONOCHROME1", "INVERSE", True), ("MONOCHROME1", "IDENTITY", True)])
def test_presentation_lut_shape_inverse_inverts_once(photometric, shape, inverted):
    from tests.helpers.corpus import _dicom

    raw = (chest_like(seed=8) * 4000).round().astype(np.uint16)
    image = read_xray(io.BytesIO(_dicom(raw, photometric=photometric, bits_stored=12, PresentationLUTShape=shape)))
    plain = (raw - raw.min()) / (raw.max() - raw.min())
    np.testing.assert_allclose(image.pixels, 1 - plain if inverted else plain, atol=1e-6)


def test_dicom_monochrome2_16bit_keeps_brightness_order(corpus):
    path = corpus["dicom_monochrome2_16bit"].path
    raw = pydicom.dcmread(path).pixel_array.astype(np.float64)
    image = read_xray(path)
    np.testing.assert_allclose(image.pixels, (raw - raw.min()) / (raw.max() - raw.min()), atol=1e-6)
    expected = {"format": "dicom", "modality": "DX", "view_position": "PA", "body_part": "CHEST", "bit_depth": 16}
    assert {key: image.metadata.get(key) for key in expected} == expected


def test_multiframe_dicom_uses_the_first_frame(corpus):
    image = read_xray(corpus["dicom_multiframe"].path)
    first = chest_like(seed=4)
    assert np.corrcoef(image.pixels.ravel(), first.ravel())[0, 1] > 0.99
    assert image.metadata["frames"] == 2


def test_dicom_without_preamble_matches_its_content(corpus):
    image = read_xray(corpus["dicom_without_preamble"].path)
    assert np.corrcoef(image.pixels.ravel(), chest_like(seed=6).ravel())[0, 1] > 0.99


def test_exif_orientation_is_applied(corpus):
    image = read_xray(corpus["exif_rotated_jpeg"].path)
    assert image.pixels.shape == (SIDE, 40)  # stored 64 wide x 40 tall, orientation 6 = 90° clockwise
    stored = chest_like(height=40, width=SIDE)
    right_way = np.abs(image.pixels - np.rot90(stored, k=-1)).mean()
    wrong_way = np.abs(image.pixels - np.rot90(stored, k=1)).mean()
    assert right_way < 0.03 < wrong_way


def test_rgba_transparency_becomes_black_and_the_rest_is_kept(corpus):
    image = read_xray(corpus["rgba_png"].path)
    grey = (chest_like() * 255).round() / 255
    assert np.all(image.pixels[:, : SIDE // 4] == 0)
    np.testing.assert_allclose(image.pixels[:, SIDE // 4:], grey[:, SIDE // 4:], atol=1e-6)


@pytest.mark.parametrize("case_name, tolerance", [("palette_png", 0.03), ("cmyk_jpeg", 0.03), ("la_png", 1e-6),
                                                  ("grey_as_rgb_jpeg", 0.03), ("bmp", 1e-6)])
def test_other_modes_come_out_as_the_same_grey_picture(corpus, case_name, tolerance):
    image = read_xray(corpus[case_name].path)
    stored_grey = (chest_like() * 255).round() / 255
    assert np.abs(image.pixels - stored_grey).mean() < tolerance
    assert image.metadata["colourfulness"] < 5


def test_colour_photo_is_read_but_flagged(corpus):
    image = read_xray(corpus["colour_photo"].path)
    assert image.metadata["colourfulness"] > COLOURFULNESS_WARNING
    assert looks_like_colour_photo(image.metadata) and looks_like_colour_photo(image.metadata["colourfulness"])
    assert not looks_like_colour_photo(read_xray(corpus["grey_as_rgb_jpeg"].path).metadata)
    assert not looks_like_colour_photo(COLOURFULNESS_WARNING - 0.1) and looks_like_colour_photo(COLOURFULNESS_WARNING)


def test_to_uint8_rounds_and_clips():
    out = to_uint8(np.array([[0.0, 0.5, 1.0, -0.2, 1.3, 0.1]], dtype=np.float32))
    assert out.dtype == np.uint8 and out.tolist() == [[0, 128, 255, 0, 255, 26]]


# ----------------------------------------------------------------------------- sources

def test_bytes_path_and_file_objects_read_the_same(corpus):
    path = corpus["chest_jpeg"].path
    reference = read_xray(path).pixels
    with open(path, "rb") as handle:
        from_handle = read_xray(handle)
    for image in (read_xray(str(path)), read_xray(path.read_bytes()), read_xray(io.BytesIO(path.read_bytes())),
                  from_handle):
        assert isinstance(image, XrayImage)
        np.testing.assert_array_equal(image.pixels, reference)


def test_name_only_colours_the_message_never_the_format(corpus):
    html = corpus["html_named_jpg"].path.read_bytes()
    assert ".png" in str(read_error(html, name="upload.png"))
    assert "name ends" not in str(read_error(html))
    jpeg = corpus["chest_jpeg"].path.read_bytes()
    assert read_xray(jpeg, name="looks_like.dcm").metadata["format"] == "jpeg"


def test_text_mode_file_is_a_programming_error(corpus):
    with open(corpus["text_named_png"].path) as handle, pytest.raises(TypeError):
        read_xray(handle)


def test_errors_survive_pickling_with_their_kind():
    error = pickle.loads(pickle.dumps(XrayReadError("corrupt", "The file is damaged.")))
    assert isinstance(error, ValueError) and error.kind == "corrupt" and str(error) == "The file is damaged."


def test_empty_bytes_and_empty_stream():
    assert read_error(b"").kind == "empty"
    assert read_error(io.BytesIO()).kind == "empty"


# ----------------------------------------------------------------------------- guards

@pytest.mark.parametrize("side", [20000, 30000])
def test_huge_png_is_refused_without_decoding(side, monkeypatch):
    data = _bomb_png(side)

    def must_not_decode(self, *args, **kwargs):
        raise AssertionError("the pixels of an oversized image were decoded")

    monkeypatch.setattr(Image.Image, "load", must_not_decode)
    monkeypatch.setattr(ImageFile.ImageFile, "load", must_not_decode)
    assert read_error(data).kind == "too_large"


def test_max_pixels_is_checked_before_decoding(corpus):
    assert read_error(corpus["chest_8bit"].path, max_pixels=SIDE * SIDE - 1).kind == "too_large"
    assert read_xray(corpus["chest_8bit"].path, max_pixels=SIDE * SIDE).pixels.shape == (SIDE, SIDE)
    # a DICOM header claiming 20000 x 20000 over 64 x 64 pixels: decoding it would be "corrupt"
    dataset = pydicom.dcmread(corpus["dicom_monochrome2_16bit"].path)
    dataset.Rows = dataset.Columns = 20000
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    assert read_error(buffer.getvalue()).kind == "too_large"
    assert MAX_PIXELS < 20000 * 20000


@pytest.mark.parametrize("damage", ["cut in pixel data", "cut before pixel data", "garbage after marker"])
def test_damaged_dicom_is_corrupt(corpus, damage):
    data = corpus["dicom_monochrome2_16bit"].path.read_bytes()
    damaged = {"cut in pixel data": data[: len(data) - 3000], "cut before pixel data": data[:400],
               "garbage after marker": data[:132] + bytes(range(256)) * 3}[damage]
    error = read_error(damaged)
    assert error.kind == "corrupt" and error.__cause__ is None
    assert_plain_message(str(error))


@pytest.mark.parametrize("centre, width", [(1000, 3000), (1500, 9000), (600, 200)])
def test_dicom_window_maps_its_own_range_onto_0_1(corpus, centre, width):
    """A window wider than the data must not be stretched to full contrast; a narrow one clips."""
    dataset = pydicom.dcmread(corpus["dicom_monochrome1"].path)
    dataset.PhotometricInterpretation, dataset.WindowCenter, dataset.WindowWidth = "MONOCHROME2", centre, width
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    raw = dataset.pixel_array.astype(np.float64)
    expected = np.clip((raw - 1024 - (centre - 0.5)) / (width - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(read_xray(buffer.getvalue()).pixels, expected, atol=1e-5)


def test_constant_deep_image_is_blank():
    buffer = io.BytesIO()
    Image.fromarray(np.full((SIDE, SIDE), 3000, np.uint16)).save(buffer, "PNG")
    assert read_error(buffer.getvalue()).kind == "constant"


def test_truncated_images_are_never_half_loaded(corpus):
    for name in ("truncated_jpeg", "truncated_png"):
        assert read_error(corpus[name].path).kind == "corrupt"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# ----------------------------------------------------------------------------- privacy

DICOM_CASES = [name for name in CASE_NAMES if name.startswith("dicom")]
PHI_STRINGS = [*PHI.values(), *PHI_UIDS.values(), "Doe", "Janet", "73519", "19610214", "Examplia", "Houseman"]


@pytest.mark.parametrize("case_name", DICOM_CASES)
def test_patient_identifiers_never_leave_the_reader(corpus, case_name, caplog):
    raw = corpus[case_name].path.read_bytes()
    assert PHI["PatientName"].encode() in raw  # the identifiers really are in the file
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            image = read_xray(raw)
            exposed = repr(image) + str(image.metadata) + str(image.warnings)
            assert set(image.metadata) <= SAFE_METADATA_KEYS
        except XrayReadError as error:
            exposed = str(error) + repr(error) + repr(error.__cause__) + repr(error.__context__)
    exposed += caplog.text + " ".join(str(warning.message) for warning in caught)
    for secret in PHI_STRINGS:
        assert secret not in exposed
    assert not re.search(r"\d+\.\d+\.\d+\.\d+\.\d+", exposed)  # no UIDs of any kind


def test_max_side_decodes_large_jpegs_smaller_but_never_below_it(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = (rng.random((2000, 1600)) * 255).astype(np.uint8)
    path = tmp_path / "big.jpeg"
    Image.fromarray(pixels).save(path, quality=90)
    full = read_xray(path)
    small = read_xray(path, max_side=512)
    assert full.pixels.shape == (2000, 1600)
    assert 512 <= min(small.pixels.shape) < 1600 and small.metadata["original_size"] == [1600, 2000]


def test_float_tiff_with_nan_pixels_reads_with_a_warning():
    values = (chest_like(seed=9) * 1000).astype(np.float32)
    values[:3, :] = np.nan
    values[5, 5] = np.inf
    buffer = io.BytesIO()
    Image.fromarray(values, mode="F").save(buffer, format="TIFF")
    image = read_xray(buffer.getvalue())
    assert np.isfinite(image.pixels).all() and (image.pixels[:3] == 0).all()
    finite = values[np.isfinite(values)]
    expected = (values[10:20, 10:20] - finite.min()) / (finite.max() - finite.min())
    np.testing.assert_allclose(image.pixels[10:20, 10:20], expected, atol=1e-5)
    assert any("not numbers" in warning for warning in image.metadata["warnings"])

    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64), np.nan, np.float32), mode="F").save(buffer, format="TIFF")
    assert read_error(buffer.getvalue()).kind == "constant"


# ----------------------------------------------------------------------------- what counts as a bad file

def _jpeg_with_exif(*entries: bytes) -> bytes:
    """A 64 x 40 JPEG whose EXIF IFD0 holds ``entries`` (12 bytes each, little-endian TIFF)."""
    ifd = struct.pack("<H", len(entries)) + b"".join(entries) + struct.pack("<I", 0)
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(chest_like(height=40))).save(buffer, "JPEG",
                                                          exif=b"Exif\0\0II*\0" + struct.pack("<I", 8) + ifd)
    return buffer.getvalue()


def _exif_entry(tag: int, kind: int, count: int, value: bytes) -> bytes:
    return struct.pack("<HHI", tag, kind, count) + value


ROTATE_90 = _exif_entry(0x0112, 3, 1, struct.pack("<HH", 6, 0))  # Orientation 6, a SHORT


def test_a_damaged_exif_block_keeps_the_image_as_stored_and_says_so(caplog):
    # XResolution is a RATIONAL; stored as text, Pillow fails (TypeError) while turning the image upright
    data = _jpeg_with_exif(ROTATE_90, _exif_entry(0x011A, 2, 3, b"72\0\0"))
    caplog.set_level(logging.DEBUG, logger="xraycore.io.reader")
    image = read_xray(data)
    assert image.pixels.shape == (40, SIDE)  # as stored, not rotated
    assert image.warnings == [xio.EXIF_UNREADABLE_WARNING]
    assert "EXIF orientation unreadable" in caplog.text and "TypeError" in caplog.text
    assert read_xray(_jpeg_with_exif(ROTATE_90)).warnings == ["EXIF rotation applied"]  # the same, undamaged


def test_a_decoder_bug_is_not_taken_for_a_damaged_file(corpus, monkeypatch):
    """Only what decoders raise for bad files becomes XrayReadError; an AttributeError is a bug: it surfaces."""
    def broken_load(self, *args, **kwargs):
        raise AttributeError("'NoneType' object has no attribute 'decode'")

    monkeypatch.setattr(ImageFile.ImageFile, "load", broken_load)
    with pytest.raises(AttributeError, match="no attribute 'decode'"):
        read_xray(corpus["chest_8bit"].path)


@pytest.mark.parametrize("case_name, module, function", [("chest_8bit", xio, "finish_image"),
                                                         ("dicom_monochrome2_16bit", dicom_io, "dicom_guards")])
def test_a_bug_in_our_own_code_surfaces_as_itself(corpus, monkeypatch, case_name, module, function):
    def buggy(*args, **kwargs):
        raise TypeError("unsupported operand type(s)")

    monkeypatch.setattr(module, function, buggy)
    with pytest.raises(TypeError, match="unsupported operand"):
        read_xray(corpus[case_name].path)


@pytest.mark.filterwarnings("ignore")  # Pillow and pydicom warn about what they skip in damaged files
def test_damaged_copies_of_every_kind_of_file_only_ever_give_a_typed_error(corpus):
    """Truncated and bit-flipped copies (a small, fixed fuzz): an XrayImage or an XrayReadError, nothing else."""
    from pydicom.data import get_testdata_file

    seeds = [corpus[name].path.read_bytes() for name in ("chest_jpeg", "png_16bit", "palette_png", "bmp",
                                                         "dicom_monochrome1", "dicom_multiframe")]
    seeds += [Path(get_testdata_file(name)).read_bytes() for name in ("MR_small_RLE.dcm", "JPEG2000.dcm")]
    seeds.append(_jpeg_with_exif(ROTATE_90))
    rng = np.random.default_rng(13)
    kinds = set()
    for data in seeds:
        for _ in range(40):
            damaged = bytearray(data[: rng.integers(1, len(data))] if rng.random() < 0.3 else data)
            for position in rng.integers(0, min(len(damaged), 4096), size=rng.integers(1, 12)):
                damaged[position] = rng.integers(0, 256)
            try:
                read_xray(bytes(damaged))
                kinds.add("ok")
            except XrayReadError as error:
                kinds.add(error.kind)
    assert {"ok", "corrupt"} <= kinds <= {"ok", *ERROR_KINDS}
