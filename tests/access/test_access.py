"""Who may do what, checked in xraycore itself; the audit trail; the folders typed paths may name; the queue.

Roles and identities are plain objects here; the signed-in versions (a real OIDC provider and Chromium)
are in tests/browser/test_access_browser.py, the pages in tests/app/test_access_app.py.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.synthetic import xray_like
from xraycore.access import policy as access
from xraycore.access import audit
from xraycore.cli import main as cli
from xraycore.training import jobs
from xraycore.clinical import operating_points as operating
from xraycore.reading_room import pacs
from xraycore.runs import directory as runs
from xraycore.evaluation import site_calibration
from xraycore.access.policy import ADMIN, READER, RESEARCHER, AccessDenied, Identity
from xraycore.inference.prediction import bytes_source
from xraycore.inference.predictor import Predictor
from xraycore.common.hashing import sha256_of_file

REPO = Path(__file__).resolve().parents[2]
READER_ID = Identity("Rita Reader", "rita@ward.example", frozenset({READER}))
RESEARCHER_ID = Identity("Sam Researcher", "sam@lab.example", frozenset({READER, RESEARCHER}))
OTHER_RESEARCHER_ID = Identity("Olga Other", "olga@lab.example", frozenset({READER, RESEARCHER}))
ADMIN_ID = Identity("Ada Admin", "ada@it.example", frozenset(access.ROLES))


@pytest.fixture
def model_dir(tiny_run, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "model"))


def lines(path: Path) -> list[dict]:
    return audit.read(path)


def png(seed: int) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(xray_like(np.random.default_rng(seed), 48, pneumonia=seed % 2 == 0)).save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------ roles


def test_roles_nest_and_only_admins_change_shared_settings():
    assert READER_ID.can(access.SCORE) and not READER_ID.can(access.TRAIN)
    assert not READER_ID.can(access.PREVIEW_OPERATING_POINT) and not READER_ID.can(access.CHANGE_OPERATING_POINT)
    assert RESEARCHER_ID.can(access.TRAIN) and RESEARCHER_ID.can(access.PREVIEW_OPERATING_POINT)
    assert not RESEARCHER_ID.can(access.CHANGE_OPERATING_POINT) and not RESEARCHER_ID.can(access.DELETE_RUNS)
    assert ADMIN_ID.can(access.CHANGE_OPERATING_POINT) and ADMIN_ID.can(access.READ_AUDIT)
    assert ADMIN_ID.role == ADMIN and RESEARCHER_ID.role == RESEARCHER and Identity("x").role is None
    assert access.local_identity().role == ADMIN, "the loopback demo's one user holds every role"
    anonymous = access.anonymous_identity()
    changes = (access.TRAIN, access.CHANGE_OPERATING_POINT, access.DELETE_RUNS, access.PACS_STORE)
    assert anonymous.can(access.SCORE) and not any(anonymous.can(p) for p in changes)
    with pytest.raises(ValueError, match="unknown role"):
        Identity("x", roles=frozenset({"superuser"}))


def test_roles_file_maps_emails_and_group_claim(tmp_path, monkeypatch):
    roles = tmp_path / "roles.toml"
    roles.write_text('group_claim = "groups"\n[emails]\n"Ada@IT.example" = "admin"\n"rita@ward.example" = "reader"\n'
                     '[groups]\n"ml-research" = "researcher"\n')
    monkeypatch.setenv(access.ROLES_FILE_ENV, str(roles))
    config = access.load_roles()
    ada = access.identity_from_claims({"email": "ada@it.example", "name": "Ada"}, config)
    assert ada.role == ADMIN and ada.roles == frozenset(access.ROLES) and ada.user == "ada@it.example"
    sam = access.identity_from_claims({"email": "sam@lab.example", "groups": ["x", "ml-research"]}, config)
    assert sam.role == RESEARCHER and sam.name == "sam@lab.example"
    rita = access.identity_from_claims({"email": "rita@ward.example", "groups": "ml-research"}, config)
    assert rita.role == RESEARCHER, "the highest role any line gives"
    assert access.identity_from_claims({"email": "nobody@x.example"}, config).role is None, "unlisted: no access"
    roles.write_text('default_role = "reader"\n')
    assert access.identity_from_claims({"email": "nobody@x.example"}, access.load_roles()).role == READER
    roles.write_text('[emails]\n"a@b.c" = "root"\n')
    with pytest.raises(ValueError, match="not a role"):
        access.load_roles()
    monkeypatch.setenv(access.ROLES_FILE_ENV, str(tmp_path / "missing.toml"))
    assert access.load_roles() == access.RoleConfig()
    example = access.load_roles(REPO / ".streamlit" / "roles.example.toml")  # the shipped template is valid
    assert example.default_role is None and set(example.groups.values()) == set(access.ROLES)


def test_loopback_addresses():
    assert all(access.is_loopback(a) for a in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"))
    assert not any(access.is_loopback(a) for a in ("0.0.0.0", "", None, "::", "10.1.2.3", "ward.example"))


def test_a_loopback_server_behind_a_proxy_counts_as_reachable():
    from xraycore.app.auth import beyond_loopback

    local = {"Host": "127.0.0.1:8501", "Origin": "http://localhost:8501"}
    assert not beyond_loopback("127.0.0.1", local) and not beyond_loopback("::1", {}) and beyond_loopback(None, {})
    assert beyond_loopback("0.0.0.0", local) and beyond_loopback("10.0.0.5", local)
    assert beyond_loopback("127.0.0.1", {**local, "X-Forwarded-For": "10.1.2.3"})
    assert beyond_loopback("127.0.0.1", {"Host": "xray.hospital.example"})
    assert beyond_loopback("127.0.0.1", {"Host": "127.0.0.1:8501", "Origin": "https://xray.hospital.example"})
    assert not beyond_loopback("127.0.0.1", {"Host": "[::1]:8501"})


def test_what_app_py_imports_before_the_pages_leaves_torch_alone():
    """The sign-in page and the navigation must come up without torch's seconds of import."""
    import subprocess

    code = ("import sys; import xraycore.access.policy, xraycore.access.audit, xraycore.training.job_queue, xraycore.app.auth; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=120).returncode == 0


def test_bundled_config_serves_on_loopback_only():
    import tomllib

    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert access.is_loopback(config["server"]["address"])


# ------------------------------------------------------------------ shared clinical settings


def test_a_reader_cannot_save_an_operating_point_through_xraycore(model_dir, log):
    shipped = (model_dir / runs.OPERATING_POINT_FILE).read_bytes()
    with pytest.raises(AccessDenied):
        operating.save(model_dir, "ward 3", {"threshold": 0.3}, identity=READER_ID)
    with pytest.raises(AccessDenied):
        operating.save_threshold(model_dir, identity=RESEARCHER_ID, threshold=0.2)
    assert (model_dir / runs.OPERATING_POINT_FILE).read_bytes() == shipped
    assert not (model_dir / operating.POINTS_FILE).exists()
    first, second = lines(log)
    assert (first["action"], first["outcome"], first["user"], first["role"]) == (
        "operating_point.save", "refused", "rita@ward.example", READER)
    assert first["model"]["name"] == "model" and len(first["model"]["sha256"]) == 64
    assert (second["outcome"], second["role"]) == ("refused", RESEARCHER)


def test_every_action_writes_exactly_one_audit_line(model_dir, tiny_dataset, log, tmp_path, monkeypatch):
    def actions() -> list[tuple[str, str]]:
        return [(entry["action"], entry["outcome"]) for entry in lines(log)]

    monkeypatch.setenv("XRAY_MODEL_DIR", str(model_dir))  # the bundled model: released for reading (issue 34)
    predictor = Predictor(model_dir)
    scans = [(f"scan{i}.png", bytes_source(png(i))) for i in range(3)] + [("junk.png", bytes_source(b"no image"))]
    predictions = list(predictor.predict_sources(scans, cam=None, batch_size=2, identity=READER_ID))
    assert len(predictions) == 4 and actions() == [("score", "ok"), ("score", "ok")], "one line per batch"
    first, second = lines(log)
    assert first["counts"]["images"] == 2 and second["counts"] == {
        "images": 2, "unreadable": 1, "positive": second["counts"]["positive"], "out_of_domain": 0}
    assert first["operating_point"] == "internal" and first["threshold"] == pytest.approx(predictor.threshold)
    assert first["model"]["sha256"] == sha256_of_file(model_dir / runs.WEIGHTS_FILE)
    assert "scan0" not in log.read_text(), "no file names"

    log.unlink()
    operating.save(model_dir, "ward 3", {"threshold": 0.3, "temperature": 1.2}, identity=ADMIN_ID)
    operating.activate(model_dir, "internal", identity=ADMIN_ID)
    operating.reset(model_dir, identity=ADMIN_ID)
    operating.save_threshold(model_dir, identity=ADMIN_ID, threshold=0.4, beta=2.0, source="test")
    with pytest.raises(ValueError):
        operating.save(model_dir, "bad", {"threshold": 2.0}, identity=ADMIN_ID)
    with pytest.raises(ValueError, match="preview only"):  # 16 films per class: a site calibration too small to store
        site_calibration.calibrate_folder(model_dir, tiny_dataset / "test", "site-a", identity=ADMIN_ID)
    assert actions() == [("operating_point.save", "ok"), ("operating_point.activate", "ok"),
                         ("operating_point.reset", "ok"), ("operating_point.save", "ok"),
                         ("operating_point.save", "failed"), ("calibration", "failed")]
    saved, activated = lines(log)[:2]
    assert saved["old"]["name"] == "internal" and saved["new"] == {"name": "ward 3", "threshold": 0.3, "temperature": 1.2}
    assert activated["old"]["name"] == "ward 3" and activated["new"]["name"] == "internal"
    assert "preview only" in lines(log)[-1]["detail"]
    assert operating.load(model_dir)["history"][0]["user"] == "ada@it.example"

    log.unlink()
    root = tmp_path / "runs"
    shutil.copytree(model_dir, root / "old-run")
    monkeypatch.setenv(access.DATA_ROOTS_ENV, str(tiny_dataset))
    monkeypatch.setattr(jobs, "build_command", lambda options, run_id, processes=1, **_: [
        sys.executable, "-c", "import time; time.sleep(60)"])
    job = jobs.launch({"data": str(tiny_dataset / "train"), "backbone": "simple_cnn", "pretrained": "none"},
                      "new-run", root=root, identity=RESEARCHER_ID)
    try:
        assert job.owner == "sam@lab.example"
        jobs.stop_job(job, identity=RESEARCHER_ID)
        _wait_until(lambda: not job.alive())
    finally:
        _kill(job)
    jobs.delete_run("old-run", identity=ADMIN_ID, root=root)
    assert not (root / "old-run").exists()
    assert actions() == [("run.launch", "ok"), ("run.stop", "ok"), ("run.delete", "ok")]
    assert lines(log)[0]["target"] == "new-run" and lines(log)[2]["old"]["backbone"] == "simple_cnn"
    assert (root / jobs.JOBS_DIR / "new-run.json").is_file(), "another run's job record is kept"
    shutil.copytree(model_dir, root / "new-run")  # the stopped job's run: deleting it forgets the job as well
    jobs.delete_run("new-run", identity=ADMIN_ID, root=root)
    assert [p.name for p in (root / jobs.JOBS_DIR).iterdir() if p.name.startswith("new-run")] == []
    assert jobs.owner_of(runs.Run(root / "new-run")) is None


def test_pacs_exchange_is_checked_and_audited(log, tmp_path, monkeypatch):
    """Store-back is an admin's: a reader is refused before any connection. Query and retrieve are a reader's;
    an unreachable node is one 'failed' line. (The round trip with a real PACS is tests/reading_room/test_pacs.py, on Orthanc.)"""
    import socket

    from pydicom import Dataset

    from xraycore.reading_room import pacs_nodes

    with socket.socket() as probe:  # a free port: nothing listens there
        probe.bind(("127.0.0.1", 0))
        nobody = pacs.Node("127.0.0.1", probe.getsockname()[1], "NOBODY", timeout=2)
    monkeypatch.setenv(pacs_nodes.NODES_FILE_ENV, str(tmp_path / "pacs_nodes.toml"))  # app identities: configured nodes
    pacs_nodes.add_node("nobody", nobody, identity=ADMIN_ID)
    log.write_text("")
    result = Dataset()
    result.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
    with pytest.raises(AccessDenied):
        pacs.store(nobody, [result], identity=READER_ID)
    with pytest.raises(pacs.PacsError):
        pacs.find_studies(nobody, since="20261129", identity=READER_ID)
    with pytest.raises(pacs.PacsError):
        pacs.store(nobody, [result], identity=ADMIN_ID)
    assert [(e["action"], e["outcome"]) for e in lines(log)] == [
        ("pacs.store", "refused"), ("pacs.query", "failed"), ("pacs.store", "failed")]


def test_roles_are_refused_server_side_for_runs_and_jobs(tmp_path, log, tiny_dataset, monkeypatch):
    root = tmp_path / "runs"
    (root / "a-run").mkdir(parents=True)
    (root / "a-run" / runs.CONFIG_FILE).write_text("{}")
    monkeypatch.setenv(access.DATA_ROOTS_ENV, str(tiny_dataset))
    with pytest.raises(AccessDenied):
        jobs.launch({"data": str(tiny_dataset / "train"), "backbone": "simple_cnn"}, "x", root=root, identity=READER_ID)
    with pytest.raises(AccessDenied):
        jobs.delete_run("a-run", identity=RESEARCHER_ID, root=root)
    assert (root / "a-run").is_dir() and not (root / jobs.JOBS_DIR).exists()
    theirs = jobs.Job(id="theirs", pid=0, command=[], root=str(root), started="", owner="olga@lab.example")
    assert jobs.may_stop(OTHER_RESEARCHER_ID, theirs.owner) and jobs.may_stop(ADMIN_ID, theirs.owner)
    assert not jobs.may_stop(RESEARCHER_ID, theirs.owner) and not jobs.may_stop(RESEARCHER_ID, None)
    with pytest.raises(AccessDenied):
        jobs.stop_job(theirs, identity=RESEARCHER_ID)
    assert [(e["action"], e["outcome"], e["role"]) for e in lines(log)] == [
        ("run.launch", "refused", READER), ("run.delete", "refused", RESEARCHER), ("run.stop", "refused", RESEARCHER)]


def test_app_code_that_forgets_the_identity_is_refused(model_dir, log):
    from streamlit.testing.v1 import AppTest

    def page(model: str) -> None:
        import streamlit as st

        import xraycore.app.auth  # noqa: F401 - as app.py and every page do first: says what an app session is
        from xraycore.clinical import operating_points as operating

        try:
            operating.save(model, "sneaky", {"threshold": 0.1})
        except PermissionError as error:
            st.error(str(error))

    at = AppTest.from_function(page, args=(str(model_dir),)).run()
    assert [e.value for e in at.error] == ["Nobody is signed in for this action."]
    assert not (model_dir / operating.POINTS_FILE).exists()
    [entry] = lines(log)
    assert entry["outcome"] == "refused" and entry["user"] is None
    operating.save(model_dir, "from-a-terminal", {"threshold": 0.1})  # outside the app: the OS user
    assert lines(log)[-1]["via"] == access.TERMINAL and lines(log)[-1]["role"] == ADMIN


# ------------------------------------------------------------------ allowed folders


def test_typed_paths_outside_the_roots_get_one_plain_refusal(tmp_path, monkeypatch):
    allowed = tmp_path / "data"
    (allowed / "kermany" / "NORMAL").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (allowed / "escape").symlink_to(tmp_path / "outside")
    (allowed / "inner").symlink_to(allowed / "kermany")
    weights = allowed / "w.safetensors"
    weights.write_bytes(b"x")
    monkeypatch.setenv(access.DATA_ROOTS_ENV, os.pathsep.join([str(allowed), str(tmp_path / "other-root")]))
    monkeypatch.chdir(allowed / "kermany")
    assert jobs.validate_directory(str(allowed / "kermany")) == (allowed / "kermany").resolve()
    assert jobs.validate_directory(str(allowed / "inner")) == (allowed / "kermany").resolve(), "a link inside is fine"
    assert jobs.validate_directory("NORMAL") == (allowed / "kermany" / "NORMAL").resolve()
    assert jobs.validate_file(str(weights)) == weights.resolve()
    refusals = set()
    for typed in ("/etc", "../..", str(allowed / "escape"), str(allowed / "escape" / "nothing-here"), "/no/such/dir",
                  "~", str(allowed) + "/../outside"):
        with pytest.raises(AccessDenied) as refused:
            jobs.validate_directory(typed)
        refusals.add(str(refused.value))
    with pytest.raises(AccessDenied) as refused:
        jobs.validate_file("/etc/passwd")
    refusals.add(str(refused.value))
    assert refusals == {access.OUTSIDE_ROOTS}, "the same words whether or not the place exists"
    with pytest.raises(ValueError, match="does not exist"):
        jobs.validate_directory(str(allowed / "missing"))  # inside the roots, existence may be told


def test_a_typed_model_directory_must_lie_under_the_roots(tiny_run, tmp_path, monkeypatch):
    from xraycore.app import catalog

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "linked").symlink_to(tiny_run)  # the run itself lies outside
    shutil.copytree(tiny_run, tmp_path / "models" / "copy")
    monkeypatch.setenv(access.DATA_ROOTS_ENV, str(tmp_path / "models"))
    assert catalog.typed_model_dir(str(tmp_path / "models" / "copy")) == (tmp_path / "models" / "copy").resolve()
    for typed in (str(tiny_run), str(tmp_path / "models" / "linked"), "/etc"):
        with pytest.raises(AccessDenied, match="not inside the folders"):
            catalog.typed_model_dir(typed)
    with pytest.raises(ValueError, match="not a model directory"):
        catalog.typed_model_dir(str(tmp_path / "models"))


def test_default_roots_are_the_repositorys_runs_models_and_data(monkeypatch, tmp_path):
    monkeypatch.delenv(access.DATA_ROOTS_ENV, raising=False)
    monkeypatch.setenv("XRAY_RUNS_DIR", str(tmp_path))
    roots = access.allowed_roots()
    assert {REPO.resolve() / name for name in ("runs", "models", "data")} <= set(roots) and tmp_path.resolve() in roots


# ------------------------------------------------------------------ the audit log itself


def test_a_torn_last_line_is_skipped_and_the_next_line_starts_fresh(log):
    audit.record("score", READER_ID, counts={"images": 1})
    with open(log, "ab") as handle:  # what a crash in the middle of a write leaves
        handle.write(b'{"time": "2026-11-29T10:00:00+00:00", "user": "x", "act')
    assert [e["action"] for e in audit.read(log)] == ["score"]
    audit.record("operating_point.save", ADMIN_ID, operating_point="w")
    assert [e["action"] for e in audit.read(log)] == ["score", "operating_point.save"]
    assert log.read_bytes().endswith(b"\n")


def test_concurrent_writers_never_interleave(log):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(_write_many, range(4)))
    entries = audit.read(log)
    assert len(entries) == 4 * 50 and len(log.read_text().splitlines()) == 200


def _write_many(worker: int) -> None:
    for index in range(50):
        audit.record("score", READER_ID, counts={"images": index}, detail="w" * (200 + worker))


def test_audit_command_filters_by_time_user_and_action(log, capsys):
    audit.append({"time": "2020-01-01T00:00:00+00:00", "user": "old@x.example", "role": "admin", "action": "run.delete",
                  "outcome": "ok"})
    audit.record("score", READER_ID, counts={"images": 3}, model={"name": "default", "sha256": "ab" * 32})
    audit.record("operating_point.save", ADMIN_ID, operating_point="w3", old={"threshold": 0.1}, new={"threshold": 0.2})
    audit.record("operating_point.activate", READER_ID, outcome=audit.REFUSED)

    def run(*args: str) -> list[str]:
        assert cli.main(["audit", *args]) == 0
        return capsys.readouterr().out.splitlines()

    assert len(run()) == 4
    assert len(run("--since", "7d")) == 3 and len(run("--since", "2021-06-01")) == 3
    assert [json.loads(line)["action"] for line in run("--user", "RITA@ward.example", "--json")] == [
        "score", "operating_point.activate"]
    [line] = run("--action", "operating_point", "--user", "ada@it.example")
    assert "w3" in line and "{'threshold': 0.1} -> {'threshold': 0.2}" in line and "(admin)" in line
    assert len(run("--action", "operating_point")) == 2 and run("--action", "operating") == []
    assert cli.main(["audit", "--since", "last tuesday"]) == 2


# ------------------------------------------------------------------ the queue


def _wait_until(condition, seconds: float = 60) -> None:
    """Poll ``condition``; a generous limit only keeps a broken queue from hanging the suite."""
    for _ in range(int(seconds / 0.2)):
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"the condition did not hold within {seconds:.0f} s")


def _kill(job: jobs.Job) -> None:
    import signal

    if job.alive():
        os.killpg(job.pid, signal.SIGKILL)


def test_a_job_recorded_before_the_queue_existed_counts_as_training(tmp_path, monkeypatch):
    from xraycore.training import job_queue as jobqueue

    monkeypatch.delenv(jobqueue.MAX_JOBS_ENV, raising=False)
    jobs_dir = tmp_path / jobs.JOBS_DIR
    jobs_dir.mkdir()
    (jobs_dir / "old.json").write_text(json.dumps({"id": "old", "pid": os.getpid(), "command": [], "root": str(tmp_path),
                                                   "started": "2026-11-01T10:00:00+00:00"}))
    assert [r["id"] for r in jobqueue.training(jobs_dir)] == ["old"] and jobqueue.ahead_of_new(jobs_dir) == 1
    [job] = jobs.list_jobs(tmp_path)
    assert job.began() and job.state() == "running" and jobs.queue(tmp_path) == []


@pytest.mark.slow
def test_one_training_job_at_a_time_the_others_wait_in_order(tmp_path, tiny_dataset, monkeypatch, log):
    root, marks = tmp_path / "runs", tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv(access.DATA_ROOTS_ENV, str(tiny_dataset))
    monkeypatch.delenv("XRAY_MAX_TRAINING_JOBS", raising=False)
    script = ("import pathlib, sys, time; m = pathlib.Path(sys.argv[1]); (m / (sys.argv[2] + '.start')).write_text("
              "repr(time.time())); time.sleep(1.5); (m / (sys.argv[2] + '.end')).write_text(repr(time.time()))")
    monkeypatch.setattr(jobs, "build_command", lambda options, run_id, processes=1, **_: [
        sys.executable, "-c", script, str(marks), run_id])
    options = {"data": str(tiny_dataset / "train"), "backbone": "simple_cnn", "pretrained": "none"}
    launched = [jobs.launch(options, name, root=root, identity=RESEARCHER_ID) for name in ("first", "second", "third")]
    try:
        _wait_until(lambda: launched[0].began())
        assert [job.id for job in jobs.queue(root)] == ["second", "third"]
        assert {job.id: job.state() for job in launched} == {"first": "running", "second": "queued", "third": "queued"}
        _wait_until(lambda: not any(job.alive() for job in launched))
    finally:
        for job in launched:
            _kill(job)
    times = {name: [float((marks / f"{name}.{edge}").read_text()) for edge in ("start", "end")]
             for name in ("first", "second", "third")}
    assert times["first"][1] <= times["second"][0] and times["second"][1] <= times["third"][0], times
    assert [e["detail"] for e in lines(log)] == ["started", "queued behind 1", "queued behind 2"]


@pytest.mark.slow
def test_a_queued_job_can_leave_the_queue(tmp_path, tiny_dataset, monkeypatch, log):
    root = tmp_path / "runs"
    monkeypatch.setenv(access.DATA_ROOTS_ENV, str(tiny_dataset))
    monkeypatch.setattr(jobs, "build_command", lambda options, run_id, processes=1, **_: [
        sys.executable, "-c", "import time; time.sleep(60)"])
    options = {"data": str(tiny_dataset / "train"), "backbone": "simple_cnn", "pretrained": "none"}
    busy = jobs.launch(options, "busy", root=root, identity=RESEARCHER_ID)
    waiting = jobs.launch(options, "waiting", root=root, identity=OTHER_RESEARCHER_ID)
    try:
        _wait_until(busy.began)
        with pytest.raises(AccessDenied):
            jobs.stop_job(waiting, identity=RESEARCHER_ID)  # not theirs
        jobs.stop_job(waiting, identity=OTHER_RESEARCHER_ID)
        _wait_until(lambda: not waiting.alive())
        assert waiting.state() == jobs.CANCELLED and jobs.queue(root) == [] and busy.alive()
        jobs.stop_job(busy, identity=ADMIN_ID)  # an admin stops anyone's
        _wait_until(lambda: not busy.alive())
    finally:
        _kill(busy)
        _kill(waiting)
