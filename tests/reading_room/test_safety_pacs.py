"""Issue 34, the PACS parts: nobody without sign-in reaches the PACS, nodes come from the administrator's list,
results are filed once and our own results are not read as films, and every exchange is audited without a
patient attribute. Functions directly, the pages through streamlit.testing, and a real PACS (Orthanc, as in
test_pacs.py). The same refusal from another network address, in Chromium: tests/browser/test_safety_pacs_browser.py."""
from __future__ import annotations

import datetime as dt
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.util import patch_config_options

from tests.helpers.corpus import PHI, PHI_UIDS, _dicom, chest_like
from tests.helpers.orthanc import AET, orthanc_binary
from tests.app.test_access_app import env  # noqa: F401 - a roles file and a private audit log
from tests.app.test_access_app import run as run_as
from tests.app.test_app import app_env, runs_root, start_app  # noqa: F401 - fixtures shared with the app tests
from tests.reading_room.test_pacs import film, frontal_model, orthanc  # noqa: F401 - the real PACS and its films
from xraycore.access import policy as access
from xraycore.access import audit
from xraycore.app import catalog
from xraycore.cli import main as cli
from xraycore.reading_room import dicom_out
from xraycore.reading_room import pacs
from xraycore.reading_room import pacs_scan
from xraycore.reading_room import pacs_nodes
from xraycore.inference import provenance
from xraycore.app import auth as webauth
from xraycore.reading_room import worklist
from xraycore.access.policy import ADMIN, READER, RESEARCHER, AccessDenied, Identity
from xraycore.inference.predictor import Predictor

REPO = Path(__file__).resolve().parents[2]
READER_ID = Identity("Rita Reader", "rita@ward.example", frozenset({READER}))
ADMIN_ID = Identity("Ada Admin", "ada@it.example", frozenset({READER, RESEARCHER, ADMIN}))
ANONYMOUS = access.anonymous_identity()
needs_orthanc = pytest.mark.skipif(orthanc_binary() is None and not os.environ.get("CI"),
                                   reason="Orthanc is not installed (CI installs it)")
MODEL = provenance.ModelProvenance("m (simple_cnn)", "2026-01-01", "0" * 64, "xraycore 0")


@pytest.fixture
def nodes(tmp_path, monkeypatch) -> Path:
    """A private PACS nodes file (empty until a test adds a node)."""
    path = tmp_path / "pacs_nodes.toml"
    monkeypatch.setenv(pacs_nodes.NODES_FILE_ENV, str(path))
    return path


@pytest.fixture
def listener():
    """A node that listens but never answers: whether anything tried to connect can be read afterwards."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.settimeout(0.3)
        yield pacs.Node("127.0.0.1", server.getsockname()[1], "LISTENER", timeout=2), server


def nobody_connected(server: socket.socket) -> bool:
    try:
        connection, _ = server.accept()
    except TimeoutError:
        return True
    connection.close()
    return False


def display_result(name: str = "study.dcm") -> catalog.DisplayResult:
    return catalog.DisplayResult(name=name, class_names=["NORMAL", "PNEUMONIA"],
                                 probabilities={"NORMAL": 0.7, "PNEUMONIA": 0.3}, positive_class="PNEUMONIA",
                                 positive_probability=0.3, image=(chest_like(seed=2) * 255).astype(np.uint8),
                                 heatmap=np.full((64, 64), 0.5, np.float16), is_dicom=True)


def x_ray(**tags) -> bytes:
    return _dicom((chest_like(seed=11) * 4095).round().astype(np.uint16), bits_stored=12, **tags)


# ------------------------------------------------------------------ item 1: the functions


def test_an_anonymous_visitor_is_refused_every_pacs_action_before_any_connection(log, nodes, listener):
    node, server = listener
    pacs_nodes.add_node("ward", node, identity=ADMIN_ID)
    log.write_text("")
    study = pacs.Study(index=1, uid=PHI_UIDS["StudyInstanceUID"])
    series = pacs.Series(study=study, uid=PHI_UIDS["SeriesInstanceUID"], modality="DX")
    entry = worklist.Entry(series=series, sop_uid=PHI_UIDS["SOPInstanceUID"], result=display_result(),
                           header=dicom_out.read_source(x_ray()))
    result = pydicom.Dataset()
    result.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
    attempts = {
        "echo": lambda: pacs.echo(node, identity=ANONYMOUS),
        "find studies": lambda: pacs.find_studies(node, "20260101", identity=ANONYMOUS),
        "find series": lambda: pacs.find_series(node, study, identity=ANONYMOUS),
        "retrieve": lambda: pacs.retrieve(node, series, identity=ANONYMOUS),
        "open in Diagnose": lambda: worklist.fetch(node, entry, identity=ANONYMOUS),
        "scan": lambda: list(pacs_scan.scan(node, Predictor.__new__(Predictor), [study], identity=ANONYMOUS)),
        "store": lambda: pacs.store(node, [result], identity=ANONYMOUS),
        "store back": lambda: worklist.send_back(node, [entry], 0.5, "internal", MODEL, identity=ANONYMOUS),
        "SR of a PACS film": lambda: dicom_out.display_report(dicom_out.PacsFilm(x_ray()), display_result(), 0.5,
                                                              "internal", MODEL, identity=ANONYMOUS),
        "overlay of a PACS film": lambda: dicom_out.display_capture(dicom_out.PacsFilm(x_ray()), display_result(),
                                                                    MODEL, identity=ANONYMOUS),
    }
    for action, attempt in attempts.items():
        with pytest.raises(AccessDenied, match="no sign-in"):
            attempt()
        assert nobody_connected(server), action
    entries = audit.read(log)
    assert len(entries) == len(attempts)  # one 'refused' line each
    assert all(e["outcome"] == "refused" and e["via"] == "anonymous" for e in entries)
    assert {e["action"] for e in entries} == {"pacs.echo", "pacs.query", "pacs.retrieve", "pacs.store",
                                              "dicom.download"}
    # What a visitor keeps: scoring their own images and the results of their own uploads.
    assert ANONYMOUS.can(access.SCORE) and ANONYMOUS.can(access.DOWNLOAD)
    assert not ANONYMOUS.can(access.PACS_QUERY) and not ANONYMOUS.can(access.PACS_STORE)
    assert dicom_out.may_download(x_ray(), ANONYMOUS) and not dicom_out.may_download(dicom_out.PacsFilm(), ANONYMOUS)
    assert dicom_out.display_report(x_ray(), display_result(), 0.5, "internal", MODEL, identity=ANONYMOUS)
    assert webauth.refusal_text(ANONYMOUS).startswith("Access refused: This server has no sign-in")


def test_a_node_nobody_configured_is_refused_to_every_app_session(log, nodes, listener):
    node, server = listener
    local = access.local_identity()
    for who in (READER_ID, ADMIN_ID, local):  # signed in or the loopback demo's user: configured nodes only
        with pytest.raises(AccessDenied, match="not configured"):
            pacs.find_studies(node, identity=who)
        with pytest.raises(AccessDenied, match="not configured"):
            pacs.retrieve(node, pacs.Series(pacs.Study(1, "1.2.3"), "1.2.3.4"), identity=who)
    with pytest.raises(AccessDenied, match="not configured"):
        pacs.store(node, [pydicom.Dataset()], identity=ADMIN_ID)
    assert nobody_connected(server)
    refused = audit.read(log)
    assert len(refused) == 7 and all(e["outcome"] == "refused" and "not configured" in e["detail"] for e in refused)

    # Once an administrator configures it, a reader's query goes through (and meets a node that never answers).
    with pytest.raises(AccessDenied):
        pacs_nodes.add_node("ward", node, identity=READER_ID)
    assert pacs_nodes.add_node("ward", node, identity=ADMIN_ID) == node
    assert pacs_nodes.name_of(pacs.Node("127.0.0.1", node.port, "LISTENER", timeout=9)) == "ward"
    with pytest.raises(pacs.PacsError):
        pacs.find_studies(pacs.Node("127.0.0.1", node.port, "LISTENER", timeout=1), identity=READER_ID)
    assert not nobody_connected(server)
    assert audit.read(log)[-1]["target"] == "ward" and audit.read(log)[-1]["outcome"] == "failed"
    # The operating-system user at a terminal (no identity outside the app) may name any node.
    assert pacs_nodes.require_configured(pacs.Node("10.9.9.9", 104, "ELSEWHERE"), access.terminal_identity())


def test_administrators_keep_the_list_of_nodes_and_each_change_is_audited(log, nodes):
    first = pacs.Node("pacs.hospital.example", 104, "PACS")
    pacs_nodes.add_node("main", first, identity=ADMIN_ID)
    pacs_nodes.add_node("backup", pacs.Node("10.0.0.7", 11112, "BACKUP", "XRAY2", timeout=12), identity=ADMIN_ID)
    assert pacs_nodes.load_nodes() == {"main": first, "backup": pacs.Node("10.0.0.7", 11112, "BACKUP", "XRAY2", 12.0)}
    with pytest.raises(AccessDenied):
        pacs_nodes.remove_node("main", identity=READER_ID)
    with pytest.raises(AccessDenied):
        pacs_nodes.add_node("evil", pacs.Node("attacker.example", 104, "X"), identity=ANONYMOUS)
    pacs_nodes.remove_node("backup", identity=ADMIN_ID)
    assert list(pacs_nodes.load_nodes()) == ["main"]
    with pytest.raises(ValueError, match="name"):
        pacs_nodes.add_node("two words", first, identity=ADMIN_ID)
    assert [(e["action"], e["outcome"], e.get("target")) for e in audit.read(log)] == [
        ("pacs.nodes.add", "ok", "main"), ("pacs.nodes.add", "ok", "backup"), ("pacs.nodes.remove", "refused", "main"),
        ("pacs.nodes.add", "refused", "evil"), ("pacs.nodes.remove", "ok", "backup"),
        ("pacs.nodes.add", "failed", "two words")]
    assert audit.read(log)[0]["new"] == "PACS at pacs.hospital.example:104"

    nodes.write_text('[nodes.main]\nhost = "pacs.hospital.example"\nport = "not a port"\ncalled_aet = "PACS"\n')
    with pytest.raises(ValueError, match="PACS node 'main'"):
        pacs_nodes.load_nodes()
    nodes.write_text("[nodes.main\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        pacs_nodes.load_nodes()
    assert pacs_nodes.load_nodes(REPO / ".streamlit" / "pacs_nodes.example.toml")["main"].called_aet == "PACS"


def test_pacs_command_picks_a_configured_node_or_a_host_at_the_terminal(nodes, capsys):
    pacs_nodes.add_node("main", pacs.Node("pacs.hospital.example", 104, "PACS", timeout=12))
    assert pacs_nodes.from_command_line("main", None, None, None) == pacs.Node("pacs.hospital.example", 104, "PACS",
                                                                               timeout=12)
    assert pacs_nodes.from_command_line("main", None, None, None, "ME", 3).calling_aet == "ME"
    assert pacs_nodes.from_command_line(None, "10.1.2.3", 104, "ANY") == pacs.Node("10.1.2.3", 104, "ANY")
    for args, said in ((["--node", "nope"], "no PACS node named 'nope' is configured (configured: main)"),
                       (["--node", "main", "--host", "10.1.2.3"], "either --node"),
                       ([], "name a configured node"), (["--host", "10.1.2.3"], "--host needs --port")):
        assert cli.main(["pacs", *args, "--model", "models/default"]) == 2
        assert said in capsys.readouterr().err, args


# ------------------------------------------------------------------ item 1: what an upload's results carry


PATIENT_MODULE = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")  # what results copy (Type 2)


def patient_values(dataset: pydicom.Dataset) -> dict[str, set[str]]:
    """Every non-empty patient-module value (group 0010) anywhere in the dataset, sequences included."""
    found: dict[str, set[str]] = {}
    for element in dataset.iterall():
        if element.tag.group == 0x0010 and element.VR != "SQ" and element.value not in (None, "", b""):
            found.setdefault(element.keyword, set()).add(str(element.value))
    return found


def test_an_uploads_dicom_results_carry_exactly_the_patient_values_it_carried():
    full = x_ray(PatientSex="F", PatientAge="064Y")
    source_values = patient_values(pydicom.dcmread(io.BytesIO(full)))
    assert source_values["PatientName"] == {PHI["PatientName"]} and "PatientAge" in source_values
    nameless = pydicom.dcmread(io.BytesIO(x_ray()))
    del nameless.PatientName, nameless.PatientBirthDate
    nameless.PatientID = "ANON-1"
    buffer = io.BytesIO()
    nameless.save_as(buffer, enforce_file_format=True)
    for upload, expected in ((full, source_values), (buffer.getvalue(), {"PatientID": {"ANON-1"}})):
        report = dicom_out.display_report(upload, display_result(), 0.5, "internal", MODEL, identity=ANONYMOUS)
        capture = dicom_out.display_capture(upload, display_result(), MODEL, identity=ANONYMOUS)
        for made in (report, capture):
            values = patient_values(pydicom.dcmread(io.BytesIO(made)))
            assert all(values[keyword] <= expected.get(keyword, set()) for keyword in values), "nothing beyond"
            assert {k: v for k, v in values.items() if k in PATIENT_MODULE} == {
                k: v for k, v in expected.items() if k in PATIENT_MODULE}, "the patient module as it came"
    assert b"Doe^Janet" not in report and b"19610214" not in report


# ------------------------------------------------------------------ item 1: the pages


def test_the_worklist_and_pacs_film_results_are_refused_to_an_anonymous_network_visitor(app_env, nodes, log):
    pacs_nodes.add_node("ward", pacs.Node("127.0.0.1", 104, "WARD"))
    with patch_config_options({"server.address": "0.0.0.0"}):
        at = start_app()
        assert any("reachable from the network" in e.value for e in at.error)
        # The navigation holds no Worklist page for a visitor: its URL leads to a refusal (not the page file).
        worklist_pages = [info for info in at._registered_pages.values() if info.get("url_pathname") == "worklist"]
        assert worklist_pages and not any(info.get("script_path") for info in worklist_pages)
        at = AppTest.from_file(str(REPO / "pages" / "worklist.py"), default_timeout=60).run()  # opened by its URL
        assert not at.exception, [e.value for e in at.exception]
        assert any(e.value.startswith("Access refused: This server has no sign-in") for e in at.error)
        assert not at.selectbox and not at.button and not at.text_input and not at.get("form_submit_button")

        # A PACS film in the session (as the Worklist would leave it): scored, but no DICOM result to download.
        at = start_app()
        at.session_state["worklist_open"] = {"study 1 / series 1 DX / image 1": dicom_out.PacsFilm(x_ray())}
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        labels = [button.label for button in at.get("download_button")]
        assert "Report (PDF)" in labels and "Result (DICOM SR)" not in labels and "Overlay (DICOM)" not in labels
    at = start_app()  # the loopback demo's user may retrieve, so may download
    at.session_state["worklist_open"] = {"study 1 / series 1 DX / image 1": dicom_out.PacsFilm(x_ray())}
    at.run()
    assert "Result (DICOM SR)" in [button.label for button in at.get("download_button")]
    at.switch_page("pages/worklist.py").run()
    assert at.selectbox(key="pacs_node").value == "ward"
    assert "pacs_host" not in [widget.key for widget in at.text_input], "no free-text host"


def test_a_signed_in_reader_picks_a_configured_node_and_cannot_change_the_list(env, nodes):
    at = run_as("pages/worklist.py", "reader")
    assert [i.value for i in at.info] == ["No PACS node is configured yet. Ask an administrator to add one."]
    pacs_nodes.add_node("ward", pacs.Node("127.0.0.1", 104, "WARD"))
    at = run_as("pages/worklist.py", "reader")
    assert at.selectbox(key="pacs_node").options == ["ward: WARD at 127.0.0.1:104"]
    assert not at.text_input and not at.expander, "no typed host, no node settings for a reader"


# ------------------------------------------------------------------ item 7: the dciodvfy guard


def test_the_dicom_result_checks_fail_in_ci_without_dciodvfy(monkeypatch):
    """The DICOM result checks (tests/reading_room/test_dicom_out.py) without dciodvfy on the machine: skipped on a
    laptop, a failure under CI, which installs it."""
    from _pytest.outcomes import Failed, Skipped

    from tests.reading_room import test_dicom_out

    monkeypatch.setattr(test_dicom_out, "DCIODVFY", None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(Skipped):
        test_dicom_out.require_dciodvfy()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(Failed, match="must run in CI"):
        test_dicom_out.require_dciodvfy()
    monkeypatch.setattr(test_dicom_out, "DCIODVFY", "/usr/bin/dciodvfy")
    assert test_dicom_out.require_dciodvfy() == "/usr/bin/dciodvfy"


# ------------------------------------------------------------------ items 6 and 7: a real PACS


def sop_classes(orthanc, study: str) -> list[str]:
    return [pydicom.dcmread(io.BytesIO(data)).SOPClassUID.name for data in orthanc.instances_of_study(study)]


@needs_orthanc
def test_results_are_filed_once_our_own_come_back_quietly_and_every_exchange_is_audited(
        orthanc, frontal_model, log, nodes, capsys):
    pacs_nodes.add_node("orthanc", pacs.Node("127.0.0.1", orthanc.dicom_port, AET))
    node = pacs_nodes.resolve("orthanc")
    study, series = generate_uid(), generate_uid()
    for number in (1, 2):
        orthanc.upload(film(study, series, number, date="20260401"))
    [target] = [s for s in pacs.find_studies(node, "20260401", identity=ADMIN_ID) if s.uid == study]
    predictor, model = Predictor(frontal_model, device="cpu"), provenance.of_model(frontal_model)

    first = list(pacs_scan.scan(node, predictor, [target], store_results=True, model=model, identity=ADMIN_ID))
    assert [item.stored for item in first if isinstance(item, pacs_scan.Scored)] == [["SR", "overlay"]] * 2
    again = list(pacs_scan.scan(node, predictor, [target], store_results=True, model=model, identity=ADMIN_ID))
    # Our SR and heat-map series: one line, no "not an image: skipped" per series; nothing stored twice.
    assert [item.message for item in again if isinstance(item, pacs.Notice)] == [
        "left out 4 series of this workbench's own results (SR and heat maps)"]
    rescored = [item for item in again if isinstance(item, pacs_scan.Scored)]
    assert [(s.stored, s.already) for s in rescored] == [([], ["SR", "overlay"])] * 2
    assert rescored[0].to_json()["already_stored"] == ["SR", "overlay"]
    entries, _ = worklist.collect(rescored)  # the Worklist's "Send results" on the same images: already there
    sent = worklist.send_back(node, entries, predictor.threshold, predictor.operating_point, model, identity=ADMIN_ID)
    assert (sent.stored, sent.already, sent.problems) == (0, 2, [])
    assert cli.main(["pacs", "--node", "orthanc", "--since", "20260401", "--model", str(frontal_model),
                     "--store-results"]) == 0
    assert "results stored for 0, already in the PACS for 2" in capsys.readouterr().err
    kinds = sop_classes(orthanc, study)
    assert kinds.count("Comprehensive SR Storage") == 2 and kinds.count("Secondary Capture Image Storage") == 2

    # The audit trail: an 'ok' line per query (studies and series), retrieval, store and scored batch ...
    lines = audit.read(log)
    admin_ok = [e for e in lines if e["user"] == ADMIN_ID.user and e["outcome"] == "ok"]
    assert {e["action"] for e in admin_ok} == {"pacs.query", "pacs.retrieve", "pacs.store", "score"}
    assert all(e["target"] == "orthanc" for e in admin_ok if e["action"] != "score")
    queries = [e["counts"] for e in admin_ok if e["action"] == "pacs.query"]
    assert queries[0]["studies"] >= 1 and {"series": 5} in queries  # 1 image series + 4 of ours, at the second scan
    assert [e["counts"]["images"] for e in admin_ok if e["action"] == "pacs.retrieve"] == [2, 2]
    assert [e["counts"] for e in admin_ok if e["action"] == "pacs.store"] == (
        [{"stored": 2, "already": 0, "refused": 0}] * 2 + [{"stored": 0, "already": 2, "refused": 0}] * 4)
    scores = [e for e in admin_ok if e["action"] == "score"]
    assert len(scores) == 2 and all(e["model"]["name"] == frontal_model.name and e["operating_point"] for e in scores)
    assert [e["counts"]["images"] for e in scores] == [2, 2]
    terminal = [e for e in lines if e["via"] == access.TERMINAL]
    assert {e["action"] for e in terminal} == {"pacs.nodes.add", "pacs.query", "pacs.retrieve", "pacs.store", "score"}
    # ... and no patient attribute, image name or UID anywhere in the file.
    text = log.read_text()
    for value in [*PHI.values(), "Janet", "Doe", study, series, *[s.sop_uid for s in rescored],
                  *[s.prediction.name for s in rescored], "image 1"]:
        assert value not in text, value


@needs_orthanc
def test_the_worklist_page_offers_configured_nodes_sends_once_and_audits_its_scoring(orthanc, app_env, nodes, log):
    today = dt.date.today().strftime("%Y%m%d")
    study, series = generate_uid(), generate_uid()
    for number in (1, 2):
        orthanc.upload(film(study, series, number, date=today))
    at = start_app()
    at.switch_page("pages/worklist.py").run()
    assert any("No PACS node is configured yet" in i.value for i in at.info)
    at.text_input(key="pacs_new_name").set_value("orthanc")  # the admin expander (the demo's user is an admin)
    at.text_input(key="pacs_new_host").set_value("127.0.0.1")
    at.number_input(key="pacs_new_port").set_value(orthanc.dicom_port)
    at.text_input(key="pacs_new_called").set_value(AET)
    next(b for b in at.get("form_submit_button") if b.label == "Add the node").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="pacs_node").value == "orthanc"
    next(b for b in at.get("form_submit_button") if b.label == "Find studies").click().run()
    at.button(key="worklist_score").click().run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.dataframe[-1].value) == 2

    at.button(key="worklist_send").click().run(timeout=120)
    assert [s.value for s in at.success] == ["Results stored for 2 image(s)."]
    at.button(key="worklist_send").click().run(timeout=120)
    assert not at.success and not at.error
    assert [i.value for i in at.info] == ["The PACS already holds the results of 2 image(s) from this model version "
                                          "and operating point: not sent again."]
    kinds = sop_classes(orthanc, study)
    assert kinds.count("Comprehensive SR Storage") == 2 and kinds.count("Secondary Capture Image Storage") == 2

    at.button(key="worklist_score").click().run(timeout=120)  # scored again: our results are one quiet line
    captions = [c.value for c in at.caption]
    assert "left out 4 series of this workbench's own results (SR and heat maps)" in captions
    assert not any("not an image" in caption for caption in captions)
    scores = [e for e in audit.read(log, action="score") if e["outcome"] == "ok"]
    assert len(scores) == 2 and all(e["via"] == access.LOCAL and e["model"]["name"] == "run-a" for e in scores)
    assert all(e["operating_point"] and e["threshold"] is not None for e in scores)
    assert [e["action"] for e in audit.read(log, action="pacs.nodes")] == ["pacs.nodes.add"]
