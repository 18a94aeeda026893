"""Sign-in, roles and the audit trail in the Streamlit app, through streamlit.testing (no browser).

A signed-in person is simulated with ``AppTest.user`` plus an ``[auth]`` secrets section; the real
OpenID Connect round trip is in tests/browser/test_access_browser.py.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.util import patch_config_options

from tests.helpers.corpus import PHI, PHI_UIDS, make_corpus
from tests.app.test_app import app_env, runs_root, start_button  # noqa: F401 - fixtures shared with the app tests
from xraycore.access import policy as access
from xraycore.access import audit
from xraycore.training import jobs
from xraycore.clinical import operating_points as operating
from xraycore.runs import directory as runs

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 60
AUTH = {"auth": {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "s" * 32,
                 "client_id": "xray", "client_secret": "secret",
                 "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration"}}
PEOPLE = {
    "reader": {"is_logged_in": True, "email": "rita@ward.example", "name": "Rita Reader", "sub": "rita"},
    "researcher": {"is_logged_in": True, "email": "sam@lab.example", "name": "Sam Researcher", "sub": "sam",
                   "groups": ["ml-research"]},
    "other researcher": {"is_logged_in": True, "email": "olga@lab.example", "name": "Olga", "sub": "olga",
                         "groups": ["ml-research"]},
    "admin": {"is_logged_in": True, "email": "ada@it.example", "name": "Ada Admin", "sub": "ada"},
    "stranger": {"is_logged_in": True, "email": "eve@elsewhere.example", "name": "Eve", "sub": "eve"},
}
ROLES = '[emails]\n"rita@ward.example" = "reader"\n"ada@it.example" = "admin"\n[groups]\n"ml-research" = "researcher"\n'


@pytest.fixture
def env(app_env, tmp_path, monkeypatch) -> Path:
    roles = tmp_path / "roles.toml"
    roles.write_text(ROLES)
    monkeypatch.setenv(access.ROLES_FILE_ENV, str(roles))
    monkeypatch.setenv(audit.AUDIT_LOG_ENV, str(tmp_path / "audit.jsonl"))
    return app_env


def run(script: str, person: str | None = None) -> AppTest:
    """``script`` (app.py or a page file) as ``person`` signed in; None: no sign-in configured."""
    at = AppTest.from_file(str(REPO / script), default_timeout=TIMEOUT)
    if person is not None:
        at.secrets.update(AUTH)
        at.user = PEOPLE[person] if person != "signed out" else {"is_logged_in": False}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def refused(at: AppTest) -> bool:
    return any(e.value.startswith("Access refused") for e in at.error)


def test_signed_in_people_see_their_name_sign_out_and_only_their_pages(env):
    at = run("app.py", "signed out")
    assert [t.value for t in at.title] == ["Chest X-ray workbench"] and [b.label for b in at.button] == ["Sign in"]
    assert not at.sidebar.selectbox, "nothing about models before sign-in"

    at = run("app.py", "reader")
    assert [t.value for t in at.title] == ["Diagnose"]
    assert "Signed in as **Rita Reader**  \nrole: reader" in [m.value for m in at.sidebar.markdown]
    assert [b.label for b in at.sidebar.button] == ["Sign out"]
    assert not at.error and not at.sidebar.info, "no demo or network banner when people sign in"
    for page in ("pages/train.py", "pages/operating_point.py", "pages/compare.py", "pages/audit.py"):
        page_run = run(page, "reader")
        assert refused(page_run) and not page_run.button and not page_run.text_input, page

    assert not refused(run("pages/train.py", "researcher")) and refused(run("pages/audit.py", "researcher"))
    assert not refused(run("pages/audit.py", "admin"))
    stranger = run("app.py", "stranger")
    assert [t.value for t in stranger.title] == ["No access yet"] and not stranger.sidebar.selectbox


def test_a_broken_roles_file_gives_nobody_a_role(env):
    access.roles_file().write_text('[emails]\n"ada@it.example" = "superuser"\n')
    at = run("app.py", "admin")
    assert [t.value for t in at.title] == ["No access yet"]
    assert any("cannot be used" in e.value and "superuser" in e.value for e in at.error)


def test_network_server_without_sign_in_says_so_on_every_page_and_changes_nothing(env):
    with patch_config_options({"server.address": "0.0.0.0"}):
        at = run("app.py")
        assert any("reachable from the network" in e.value for e in at.error)
        assert [t.value for t in at.title] == ["Diagnose"]
        for page in ("pages/train.py", "pages/operating_point.py", "pages/audit.py"):
            page_run = run(page)
            assert refused(page_run) and not page_run.button, page
    at = run("app.py")  # the bundled loopback setting: a local demo with every role, and a banner says so
    assert not at.error and any("Local demo" in i.value for i in at.sidebar.info)


def test_researcher_previews_the_operating_point_and_an_admin_saves_it(env):
    point_file = env / "run-a" / runs.OPERATING_POINT_FILE
    before = point_file.read_bytes()
    at = run("pages/operating_point.py", "researcher")
    assert not any(b.key == "op_save" for b in at.button)
    assert any("preview" in c.value for c in at.caption)
    assert point_file.read_bytes() == before

    at = run("pages/operating_point.py", "admin")
    at.slider[0].set_value(0.3).run()
    at.checkbox(key="op_save_confirm").check().run()
    at.button(key="op_save").click().run()
    assert point_file.read_bytes() == before, "the shipped point is never rewritten"
    assert operating.get(env / "run-a")["threshold"] == pytest.approx(0.3)
    [entry] = audit.read()
    assert (entry["action"], entry["outcome"], entry["user"], entry["role"]) == (
        "operating_point.save", "ok", "ada@it.example", "admin")
    assert entry["new"]["threshold"] == pytest.approx(0.3) and entry["model"]["name"] == "run-a"


def test_a_dicom_upload_is_audited_without_its_patient_tags(env, tmp_path):
    dicom = make_corpus(tmp_path / "corpus")["dicom_monochrome2_16bit"].path.read_bytes()
    assert PHI["PatientName"].encode() in dicom and PHI["PatientID"].encode() in dicom
    upload_name = "Doe_Janet_PID-73519-XQ_chest.dcm"
    at = run("app.py", "reader")
    at.file_uploader(key="uploads").set_value([(upload_name, dicom, "application/dicom")])
    at.run()
    assert not at.exception and len(at.metric) == 1
    [entry] = audit.read()
    assert (entry["action"], entry["user"], entry["counts"]["images"]) == ("score", "rita@ward.example", 1)
    assert entry["model"]["name"] == "run-a" and len(entry["model"]["sha256"]) == 64
    text = audit.log_path().read_text()
    for value in [*PHI.values(), *PHI_UIDS.values(), "Janet", "Doe", upload_name, "chest.dcm", "73519"]:
        assert value not in text, value


def test_train_page_refuses_paths_outside_the_roots(env, tmp_path, monkeypatch):
    allowed = tmp_path / "data"
    allowed.mkdir()
    (allowed / "out").symlink_to("/etc")
    monkeypatch.setenv(access.DATA_ROOTS_ENV, str(allowed))
    at = run("pages/train.py")
    for typed in ("/etc", "../..", str(allowed / "out"), "/no/such/folder"):
        at.text_input(key="train_data").set_value(typed)
        start_button(at).click().run()
        assert [e.value for e in at.error] == [access.OUTSIDE_ROOTS], typed
    assert not (env / jobs.JOBS_DIR).exists()
    assert [(e["action"], e["outcome"]) for e in audit.read()] == [], "the form refuses before anything is launched"


def test_only_an_admin_is_offered_deleting_a_run_and_it_is_audited(env):
    assert not any(box.key == "delete_ref" for box in run("pages/train.py", "researcher").selectbox)
    at = run("pages/train.py", "admin")
    at.selectbox(key="delete_ref").set_value("run-b")
    at.checkbox(key="delete_sure").check().run()
    at.button(key="delete_go").click().run()
    assert any("Deleted run-b" in s.value for s in at.success) and not (env / "run-b").exists()
    [entry] = audit.read()
    assert (entry["action"], entry["outcome"], entry["target"], entry["user"]) == (
        "run.delete", "ok", "run-b", "ada@it.example")


def test_the_train_page_shows_the_queue_and_lets_the_owner_cancel(env, tiny_dataset, monkeypatch):
    import os
    import signal
    import sys
    import time

    monkeypatch.setattr(jobs, "build_command", lambda options, run_id, processes=1, **_: [
        sys.executable, "-c", "import time; time.sleep(60)"])
    options = {"data": str(tiny_dataset / "train"), "backbone": "simple_cnn", "pretrained": "none"}
    researcher = access.identity_from_claims(PEOPLE["researcher"], access.load_roles())
    launched = [jobs.launch(options, name, identity=researcher) for name in ("busy", "next-up")]
    try:
        at = run("pages/train.py", "researcher")
        assert "Waiting for a training slot (1)" in [h.value for h in at.subheader]
        [table] = [t.value for t in at.dataframe if "place" in t.value]
        assert table["job"].tolist() == ["next-up"] and table["launched by"].tolist() == ["sam@lab.example"]
        assert any(b.key == "cancel:next-up" for b in run("pages/train.py", "admin").button), "an admin may cancel"
        assert not any(b.key == "cancel:next-up" for b in run("pages/train.py", "other researcher").button)
        at.button(key="cancel:next-up").click().run()
        deadline = time.monotonic() + 30
        while launched[1].alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert launched[1].state() == jobs.CANCELLED and jobs.queue() == []
    finally:
        for job in launched:
            if job.alive():
                os.killpg(job.pid, signal.SIGKILL)
    assert [(e["action"], e["outcome"], e["user"]) for e in audit.read()] == [
        ("run.launch", "ok", "sam@lab.example"), ("run.launch", "ok", "sam@lab.example"),
        ("run.stop", "ok", "sam@lab.example")]
