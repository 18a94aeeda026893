"""DICOM as hospitals send it: every test file pydicom ships goes through predict, and the DICOM's own
view, body part and age lead the answer when they fall outside the model's intended_use.json."""
from __future__ import annotations

import io
import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder, pixel_array

from tests.helpers.corpus import _dicom, chest_like, make_corpus
from tests.app.test_app import app_env, runs_root, start_app  # noqa: F401 - fixtures shared with the app tests
from tests.io.test_io import assert_plain_message
from xraycore.evaluation import model_card as card
from xraycore.cli import main as cli
from xraycore.io import dicom as dicom_io
from xraycore.io import intended_use
from xraycore.io.dicom import dicom_guards
from xraycore.io.image import ERROR_KINDS, XrayReadError
from xraycore.io.reader import read_xray
from xraycore.inference.predictor import Predictor

# The files that ship inside pydicom's wheel, found next to one of them: get_testdata_files() would also try to
# download pydicom-data's files, and these tests never touch the network.
PYDICOM_FILES = sorted(Path(get_testdata_file("MR_small.dcm")).parent.glob("*.dcm"))
DECODED_BY_PLUGINS = {  # compressed syntaxes a PACS sends, each decoded by a plugin pinned in requirements.txt
    "SC_rgb_jpeg_gdcm.dcm": "JPEG Lossless SV1", "MR_small_jpeg_ls_lossless.dcm": "JPEG-LS lossless",
    "SC_rgb_jls_lossy_line.dcm": "JPEG-LS near-lossless", "MR_small_jp2klossless.dcm": "JPEG 2000 lossless",
    "JPEG2000.dcm": "JPEG 2000", "693_J2KI.dcm": "JPEG 2000", "JPGExtended.dcm": "12-bit JPEG Extended",
    "MR_small_RLE.dcm": "RLE",
}
UNDECODABLE = {  # pydicom itself fails on these with every plugin installed; the reason the message gives
    "JPEG-lossy.dcm": "breaks a rule of the JPEG standard",
    "JPEG2000-embedded-sequence-delimiter.dcm": "image size recorded inside its compressed data differs",
}
INTENDED = intended_use.IntendedUse(age_years=(1, 5), views=("PA", "AP"), body_parts=("CHEST",),
                                    population="pediatric chest X-rays")


@pytest.fixture(scope="module")
def pydicom_predictions(tiny_run) -> dict:
    predictor = Predictor(tiny_run, device="cpu")
    return {Path(p.name).name: p for p in predictor.predict_files(PYDICOM_FILES)}


def test_every_pydicom_test_file_is_scored_or_refused_with_a_plain_reason(pydicom_predictions):
    assert len(pydicom_predictions) == len(PYDICOM_FILES) >= 70
    for name, prediction in pydicom_predictions.items():
        if prediction.ok:
            assert 0.0 <= prediction.positive_probability <= 1.0, name
        else:
            assert prediction.error_kind in ERROR_KINDS, name
            assert_plain_message(prediction.error)
    scored = [name for name, prediction in pydicom_predictions.items() if prediction.ok]
    assert set(DECODED_BY_PLUGINS) <= set(scored)
    assert len(scored) >= 45


def test_cannot_be_decoded_only_where_pydicom_fails_with_every_plugin(pydicom_predictions):
    refused = {name: p.error for name, p in pydicom_predictions.items() if not p.ok and "cannot be decoded" in p.error}
    assert set(refused) == set(UNDECODABLE)
    for name, message in refused.items():
        assert UNDECODABLE[name] in message
        dataset = pydicom.dcmread(get_testdata_file(name))
        plugins = get_decoder(dataset.file_meta.TransferSyntaxUID).available_plugins
        assert len(plugins) >= 2  # Pillow and pylibjpeg at least
        for plugin in plugins:
            with pytest.raises((RuntimeError, ValueError)):
                pixel_array(dataset, decoding_plugin=plugin)


def test_a_missing_decoder_is_named_as_the_reason(tmp_path, monkeypatch):
    case = make_corpus(tmp_path)["dicom_jpeg_lossless"]
    monkeypatch.setattr(dicom_io, "_decoder_available", lambda transfer_syntax: False)
    with pytest.raises(XrayReadError) as caught:
        read_xray(case.path)
    assert caught.value.kind == "unsupported" and "no decoder for this compression is installed" in str(caught.value)
    assert_plain_message(str(caught.value))


def _damaged_testdata(name: str, at: int, old: bytes, new: bytes) -> bytes:
    data = bytearray(Path(get_testdata_file(name)).read_bytes())
    assert data[at:at + len(old)] == old, "pydicom's test file changed"
    data[at:at + len(old)] = new
    return bytes(data)


def test_a_decoder_that_panics_on_damaged_data_gives_a_plain_refusal():
    """pylibjpeg-rle panics (a Rust PanicException, a BaseException) on this one flipped byte of RLE data."""
    damaged = _damaged_testdata("MR_small_RLE.dcm", 2676, b"\xfe", b"\x90")
    with pytest.raises(BaseException) as panic:
        pixel_array(pydicom.dcmread(io.BytesIO(damaged)))
    assert type(panic.value).__name__ == "PanicException"
    with pytest.raises(XrayReadError) as caught:
        read_xray(damaged)
    assert caught.value.kind == "unsupported" and "RLE" in str(caught.value)
    assert_plain_message(str(caught.value))


def test_a_jpeg2000_frame_that_would_hang_pydicom_is_refused_at_once():
    """pydicom walks a JP2 file's boxes until the codestream box and never ends on a box of length 0: with
    the codestream box renamed, it runs onto the frame's padding byte and loops forever."""
    codestream_box = Path(get_testdata_file("GDCMJ2K_TextGBR.dcm")).read_bytes().index(b"jp2c")
    damaged = _damaged_testdata("GDCMJ2K_TextGBR.dcm", codestream_box, b"jp2c", b"jp2x")

    def hung(*_):
        raise AssertionError("reading the file did not end")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        with pytest.raises(XrayReadError) as caught:
            read_xray(damaged)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert caught.value.kind == "unsupported" and "JPEG 2000 file structure is damaged" in str(caught.value)


def test_junk_behind_a_compressed_syntax_is_called_damaged(tmp_path):
    corpus = make_corpus(tmp_path)
    for case_name, codec in (("dicom_jpeg_lossless", "JPEG"), ("dicom_jpeg2000_junk", "JPEG 2000")):
        with pytest.raises(XrayReadError) as caught:
            read_xray(corpus[case_name].path)
        assert f"does not begin like {codec} data" in str(caught.value)


# ------------------------------------------------------------------ guards: view, body part, age

def _film(**tags: str) -> bytes:
    """A small synthetic DX chest film (PA, CHEST unless overridden) with the given DICOM tags."""
    return _dicom((chest_like(seed=11) * 4095).round().astype(np.uint16), bits_stored=12, **tags)


@pytest.fixture(scope="module")
def pediatric_model(tiny_run, tmp_path_factory) -> Path:
    """A copy of tiny_run that states the bundled model's intended use."""
    path = tmp_path_factory.mktemp("pediatric") / "model"
    shutil.copytree(tiny_run, path)
    intended_use.save(path, INTENDED)
    return path


@pytest.mark.parametrize("tags, expected", [
    ({"ViewPosition": "PA", "PatientAge": "003Y"}, None),
    ({"ViewPosition": "AP", "PatientAge": "018M"}, None),
    ({"ViewPosition": "LL", "PatientAge": "003Y"}, "view this model does not read"),
    ({"ViewPosition": "LATERAL"}, "view this model does not read"),
    ({"BodyPartExamined": "HAND", "PatientAge": "004Y"}, "body part examined is not the chest"),
    ({"PatientAge": "047Y"}, "outside the age range this model was trained on (1–5 years)"),
], ids=["frontal-child", "ap-toddler", "lateral", "lateral-spelled-out", "hand", "adult"])
def test_each_guard_leads_the_answer_and_a_frontal_child_gets_none(pediatric_model, tags, expected):
    prediction = next(Predictor(pediatric_model, device="cpu").predict_sources([("film.dcm", _film(**tags))]))
    assert prediction.ok and prediction.positive_probability is not None  # still scored: the reader decides
    answer = prediction.to_json()
    if expected is None:
        assert prediction.guards == [] and answer["guards"] == []
        return
    [guard] = prediction.guards
    assert expected in guard and answer["warnings"][0] == guard and answer["guards"] == [guard]
    assert_plain_message(guard)
    age = tags.get("PatientAge")
    if age:  # the age is compared, never kept or shown
        exposed = json.dumps(answer) + repr(prediction.metadata)
        assert age not in exposed and f" {int(age[:-1])} " not in " ".join(prediction.guards)


def test_a_model_without_intended_use_skips_the_checks(tiny_run):
    prediction = next(Predictor(tiny_run, device="cpu").predict_sources(
        [("lateral.dcm", _film(ViewPosition="LL", BodyPartExamined="HAND", PatientAge="070Y"))]))
    assert prediction.ok and prediction.guards == []


def _dataset(**tags: str) -> Dataset:
    dataset = Dataset()
    for keyword, value in tags.items():
        setattr(dataset, keyword, value)
    return dataset


@pytest.mark.parametrize("age, outside", [
    ("011M", True), ("012M", False), ("052W", True), ("053W", False), ("300D", True), ("001Y", False),
    ("005Y", False), ("071M", False), ("072M", True), ("006Y", True), ("085Y", True)])
def test_age_counts_in_completed_years(age, outside):
    assert dicom_guards(_dataset(PatientAge=age), INTENDED) == {"age_outside_range": outside}


@pytest.mark.parametrize("tags", [{}, {"PatientAge": ""}, {"PatientAge": "old"}, {"ViewPosition": ""}])
def test_missing_or_unreadable_tags_set_no_flag(tags):
    assert dicom_guards(_dataset(**tags), INTENDED) == {}


def test_views_and_body_parts_follow_the_model_and_common_spellings():
    assert dicom_guards(_dataset(ViewPosition="ap ", BodyPartExamined="THORAX"), INTENDED) == {
        "non_frontal": False, "non_chest": False}
    assert dicom_guards(_dataset(ViewPosition="RL", BodyPartExamined="SKULL")) == {
        "non_frontal": True, "non_chest": True}
    assert "age_outside_range" not in dicom_guards(_dataset(PatientAge="070Y"))  # no range given: not even read
    lateral_model = intended_use.IntendedUse(views=("LL", "RL"))
    assert dicom_guards(_dataset(ViewPosition="LL"), lateral_model) == {"non_frontal": False}


def test_damaged_intended_use_names_the_file(tmp_path):
    (tmp_path / intended_use.INTENDED_USE_FILE).write_text('{"age_years": [5, 1]}')
    with pytest.raises(ValueError, match="intended_use.json"):
        intended_use.load(tmp_path)
    (tmp_path / intended_use.INTENDED_USE_FILE).write_text('{"age_years": [1, 5')
    with pytest.raises(ValueError, match="intended_use.json is damaged|intended_use.json is not valid JSON"):
        intended_use.load(tmp_path)


def test_diagnose_shows_the_guard_before_the_probability(app_env):
    intended_use.save(app_env / "run-a", INTENDED)  # the page's model: a private copy of tiny_run
    at = start_app()
    at.file_uploader(key="uploads").set_value([("side.dcm", _film(ViewPosition="LL"), "application/dicom"),
                                                ("front.dcm", _film(PatientAge="002Y"), "application/dicom")])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    order = [(node.type, getattr(node, "value", None)) for node in _walk(at.main)]
    guard = "The DICOM marks this film as a view this model does not read"
    shown = ["guard" if kind == "warning" and value.startswith(guard) else kind for kind, value in order
             if kind == "metric" or (kind == "warning" and value.startswith(("The DICOM", "The patient")))]
    assert shown == ["guard", "metric", "metric"]  # side.dcm: its guard, then its probability; front.dcm: none
    assert at.dataframe[0].value["warnings"].tolist()[0].startswith("The DICOM marks this film")


def _walk(node):
    """Every element under ``node``, in the order the page shows them."""
    children = getattr(node, "children", None)
    if not children:
        yield node
        return
    for child in children.values():
        yield from _walk(child)


# ------------------------------------------------------------------ skipping non-frontal films

def test_skip_non_frontal_leaves_lateral_films_out_and_counts_them(pediatric_model, tmp_path, capsys):
    (tmp_path / "front.dcm").write_bytes(_film(ViewPosition="PA"))
    (tmp_path / "side.dcm").write_bytes(_film(ViewPosition="LL"))
    files = [str(tmp_path / "front.dcm"), str(tmp_path / "side.dcm")]
    skip = intended_use.SkipNonFrontal()
    predictions = list(Predictor(pediatric_model, device="cpu").predict_files(files, skip=skip))
    assert [p.name for p in predictions] == files[:1] and skip.skipped == files[1:]

    assert cli.main(["predict", "--model", str(pediatric_model), "--json", "--skip-non-frontal", *files]) == 0
    captured = capsys.readouterr()
    assert [json.loads(line)["file"] for line in captured.out.splitlines()] == files[:1]
    assert "skipped 1 non-frontal DICOM file(s)" in captured.err
    assert cli.main(["predict", "--model", str(pediatric_model), *files]) == 0  # off by default: both answered
    out = capsys.readouterr().out
    assert "side.dcm: warning: The DICOM marks this film as a view" in out and out.count("(p=") == 2


# ------------------------------------------------------------------ the model card and bundles

def test_bundled_model_states_its_intended_use_on_its_card():
    bundled = Path(__file__).resolve().parents[2] / "models" / "default"
    intended = intended_use.load(bundled)
    assert intended.age_years == (1, 5) and intended.views == ("PA", "AP") and intended.body_parts == ("CHEST",)
    assert "## Intended population" in (bundled / "MODEL_CARD.md").read_text()
    assert "intended_use.json" in card.SERVING_FILES


def test_bundle_copies_intended_use_and_the_card_shows_it(pediatric_model, tmp_path, monkeypatch):
    monkeypatch.setattr(card, "validation_figures", _quick_figures(card.validation_figures))
    dest = card.bundle_model(pediatric_model, tmp_path / "bundle", "python -m xraycore train")
    assert intended_use.load(dest) == INTENDED
    text = (dest / "MODEL_CARD.md").read_text()
    assert "## Intended population" in text and "- Age: 1–5 years" in text and "PA, AP" in text
    ensemble = card.bundle_ensemble([pediatric_model, pediatric_model], tmp_path / "ensemble", "cmd")
    assert intended_use.load(ensemble) == INTENDED
    assert "## Intended population" in (ensemble / "MODEL_CARD.md").read_text()
    assert Predictor(ensemble, device="cpu").intended == INTENDED


def _quick_figures(figures):
    """The card's bootstrap with 50 resamples: the section under test does not depend on it."""
    return lambda run, n_resamples=1000: figures(run, n_resamples=50)


def test_guard_flags_are_the_only_trace_of_the_age_in_metadata():
    image = read_xray(io.BytesIO(_film(PatientAge="042Y")), intended=INTENDED)
    assert image.metadata["dicom_guards"] == {"non_frontal": False, "non_chest": False, "age_outside_range": True}
    assert "042Y" not in repr(image.metadata) and "42" not in json.dumps(image.metadata["dicom_guards"])
