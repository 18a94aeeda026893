"""Reads recorded on Diagnose (AppTest): one click agrees with the call, the form records a disagreement with
its reference, a correction supersedes, and `reads list` shows what the page recorded."""
from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image

from tests.app.test_app import app_env, runs_root, start_app  # noqa: F401 - the app's environment fixtures
from tests.helpers.synthetic import xray_like
from xraycore.cli import main as cli


def png(pneumonia: bool, seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(xray_like(np.random.default_rng(seed), 64, pneumonia)).save(buffer, format="PNG")
    return buffer.getvalue()


def listed_reads(capsys) -> list[dict]:
    capsys.readouterr()
    assert cli.main(["reads", "list", "--json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def test_reads_recorded_on_diagnose_appear_in_reads_list(app_env, capsys):
    at = start_app()
    at.file_uploader(key="uploads").set_value([("person7_bacteria_1.png", png(True, 1), "image/png"),
                                               ("IM-0042-0001.png", png(False, 2), "image/png")])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    agree = [button for button in at.button if button.label.startswith("Agree: ")]
    assert len(agree) == 2
    first_call = agree[0].label.removeprefix("Agree: ")
    agree[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Your read (no. 1)" in s.value for s in at.success)
    assert len([b for b in at.button if b.label.startswith("Agree: ")]) == 1  # the other film still waits

    # The second film: disagree through the form, resting on a CT.
    form_read = next(radio for radio in at.radio if radio.key.startswith("details:"))  # the form of the film unread
    other = "uncertain"  # unlike any call, so the two films' forms stay told apart below
    form_read.set_value(other)
    next(box for box in at.selectbox if box.key.startswith("details:")).set_value("CT")
    next(button for button in at.button if button.label == "Save my read").click().run()
    assert not at.exception, [e.value for e in at.exception]

    rows = listed_reads(capsys)
    assert [(row["read"], row["agrees"], row["reference"]) for row in rows] == [
        (first_call, True, None), (other, False, "CT")]
    assert all(row["ai_call"] in ("NORMAL", "PNEUMONIA") and len(row["film_sha256"]) == 64 for row in rows)
    assert not any("person7" in json.dumps(row) or "IM-0042" in json.dumps(row) for row in rows)

    # Correcting the first read supersedes it: the list shows the correction, the history keeps both.
    correct_read = next(radio for radio in at.radio if radio.key.startswith("correct:") and radio.value == first_call)
    corrected = next(option for option in correct_read.options if option != first_call)
    correct_read.set_value(corrected)
    next(button for button in at.button if button.label == "Save the correction").click().run()
    assert not at.exception, [e.value for e in at.exception]
    rows = listed_reads(capsys)
    assert sorted(row["read"] for row in rows) == sorted([corrected, other])
    assert any(row["supersedes"] == 1 and row["kind"] == "correction" for row in rows)
