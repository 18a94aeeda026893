"""Triage in Diagnose: a batch of 100 scans shows progress batch by batch, the summary sorts by probability with
out-of-domain and failed files marked, and a batch cut short (a click mid-batch reruns the page) keeps what it
had scored."""
from __future__ import annotations

import io
import time

import numpy as np
import pytest
import streamlit as st
from PIL import Image
from streamlit.delta_generator import DeltaGenerator

from tests.helpers.synthetic import xray_like
from tests.app.test_app import app_env, record_scored_names, runs_root, start_app  # noqa: F401 - fixtures shared with the app tests
from xraycore.app import catalog

RESULTS_KEY = "diagnose_results"


def _batch(count: int) -> list[tuple[str, bytes, str]]:
    rng = np.random.default_rng(9)
    files = []
    for index in range(count):
        buffer = io.BytesIO()
        Image.fromarray(xray_like(rng, 96, pneumonia=index % 3 == 0)).save(buffer, format="PNG")
        files.append((f"scan{index:03d}.png", buffer.getvalue(), "image/png"))
    return files


def test_flags_and_order_of_the_summary():
    def result(name: str, p: float | None, ood: bool = False) -> catalog.DisplayResult:
        if p is None:
            return catalog.DisplayResult(name=name, error="unreadable")
        return catalog.DisplayResult(name=name, class_names=["NORMAL", "PNEUMONIA"], positive_class="PNEUMONIA",
                                     probabilities={"NORMAL": 1 - p, "PNEUMONIA": p}, positive_probability=p,
                                     out_of_domain=ood)
    results = [result("low", 0.1), result("bad", None), result("odd", 0.5, ood=True), result("high", 0.9)]
    rows = catalog.summary_rows(sorted(results, key=catalog.triage_key), 0.5)
    # In-domain films first (most probable first), then out of domain (issue 34: its probability is not reliable).
    assert [(row["file"], row["flag"]) for row in rows] == [("high", ""), ("low", ""), ("odd", "out of domain"),
                                                            ("bad", "failed")]
    multi = catalog.DisplayResult(name="m", class_names=["NORMAL", "BACTERIAL", "VIRAL"],
                                  probabilities={"NORMAL": 0.7, "BACTERIAL": 0.2, "VIRAL": 0.1})
    assert catalog.triage_score(multi) == pytest.approx(0.3)  # P(not NORMAL): the number a reader asks first


def test_a_batch_of_100_shows_progress_sorts_and_survives_an_interruption(app_env, monkeypatch):
    files = _batch(100) + [("broken.png", b"not an image at all", "image/png")]
    fractions: list[float] = []
    real_progress, real_update = st.progress, DeltaGenerator.progress

    def recording(update):
        return lambda *args, **kwargs: fractions.append(float(args[-1] if update is real_update else args[0])) \
            or update(*args, **kwargs)

    monkeypatch.setattr(st, "progress", recording(real_progress))  # the bar shown...
    monkeypatch.setattr(DeltaGenerator, "progress", recording(real_update))  # ...and each update of it
    scored = record_scored_names(monkeypatch)
    # The first run is cut short after 3 batches, as a click mid-batch would: what was scored is kept.
    real_display, calls = catalog.for_display, []

    def interrupted(prediction, *args, **kwargs):
        calls.append(prediction.name)
        if len(calls) == 25:
            raise RuntimeError("interrupted")
        return real_display(prediction, *args, **kwargs)

    monkeypatch.setattr(catalog, "for_display", interrupted)
    at = start_app()
    at.file_uploader(key="uploads").set_value(files)
    at.run(timeout=300)
    assert at.exception  # the cut
    assert len(at.session_state[RESULTS_KEY]["results"]) == 24

    monkeypatch.setattr(catalog, "for_display", real_display)
    scored.clear()
    fractions.clear()
    started = time.perf_counter()
    at.run(timeout=300)
    elapsed = time.perf_counter() - started
    assert not at.exception, [e.value for e in at.exception]
    assert len(scored) == 101 - 24  # only what was missing

    assert fractions[0] == 0.0 and len(fractions) >= 10 and fractions == sorted(fractions)  # batch by batch
    table = at.dataframe[0].value
    assert len(table) == 101 and table["file"].tolist()[-1] == "broken.png" and table["flag"].tolist()[-1] == "failed"
    probabilities, flags = table["P(PNEUMONIA)"].tolist()[:-1], table["flag"].tolist()[:-1]
    assert set(flags) <= {"", "out of domain"}
    assert flags == sorted(flags, key=lambda flag: flag == "out of domain")  # in-domain films first (issue 34)
    for group in ("", "out of domain"):  # each group most probable first
        within = [p for p, flag in zip(probabilities, flags) if flag == group]
        assert within == sorted(within, reverse=True)
    assert len(at.metric) == 10  # detail cards page by page: the page stays light
    print(f"100 scans (77 left after the cut) scored and shown in {elapsed:.1f} s")
