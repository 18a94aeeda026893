"""Diagnose: drop in chest X-rays, get the pneumonia probability, the call and where the model looked.

Uploaded scans stay in memory (their bytes are handed to the Predictor, never written to disk).
A session keeps one small :class:`xraycore.inference.display.DisplayResult` per image and heat-map method, so
50 scans stay cheap and switching back to a method already seen scores nothing again;
opacity changes redraw the overlay from the stored heat map without another forward pass.
"""
from __future__ import annotations

import datetime
from pathlib import Path

import streamlit as st

from xraycore.access import policy as access
from xraycore.inference.backends import choice as backend
from xraycore.app import catalog
from xraycore.app import model_cache
from xraycore.app import read_form
from xraycore.app import monitoring_view
from xraycore.explain import cam as explain
from xraycore.explain.lung_attention import EMPTY_SENTENCE, OUTSIDE_SENTENCE
from xraycore.explain.lung_fields import draw_outline
from xraycore.inference import provenance
from xraycore.clinical import releases
from xraycore.clinical import triage
from xraycore.app import auth as webauth
from xraycore.evaluation.point_evidence import ordered_evidence
from xraycore.inference.prediction import bytes_source
from xraycore.inference.predictor import Predictor
from xraycore.common.model_directory import ModelDirectoryError

BATCH_SIZE = 8  # images per forward pass: the progress bar moves at least this often
PER_PAGE = 10  # detail cards shown at once; the summary table always lists every image
RESULTS_KEY = "diagnose_results"
WORKLIST_OPEN_KEY = "worklist_open"  # images the Worklist page opened here (name -> bytes in memory)


BACKEND_LABELS = {backend.AUTO: "automatic", backend.ONNXRUNTIME: "ONNX Runtime", backend.TORCH: "PyTorch"}


def show_model(description: dict) -> None:
    """Which model answers and on what it was validated: always in the sidebar."""
    with st.sidebar:
        st.subheader("Model answering")
        st.markdown(f"**{description['model']}** · `{description['backbone']}`  \n"
                    f"classes: {', '.join(description['classes'])}")
        if description.get("threshold") is not None:
            st.markdown(f"operating point **{description.get('operating_point')}**: threshold "
                        f"**{description['threshold']:.3f}**")
        st.caption(f"answered by **{BACKEND_LABELS[description['backend']]}** ({description['backend_reason']})")
        rows = ordered_evidence(description["path"])
        if rows:
            st.markdown("**What its figures rest on** (sensitivity/specificity at the operating point each was "
                        "measured with; the point in use first):")
            # One short block per data set, not a table: the sidebar is too narrow for more than one column.
            st.markdown("\n".join(f"- {'**in use** · ' if r['active'] else ''}{r['data']}: n {r['n']} · AUROC "
                                   f"{_number(r['auroc'])} · sens. {_number(r['sensitivity'])} · spec. "
                                   f"{_number(r['specificity'])} · point {r['operating_point']}" for r in rows))
            if not any(r["kind"] == "external" for r in rows):
                st.warning("Only internal validation is recorded for this model: expect lower figures on new "
                           "patients. Validate it on your own labelled sample (`python -m xraycore calibrate`).")
        else:
            st.markdown("no validation summary stored with this model")
        if description.get("weights_source"):
            st.caption(f"weights: {description['weights_source']}")
        if description.get("data"):
            st.caption(f"trained on: {description['data']}")
        if (description.get("intended_use") or {}).get("population"):
            st.caption(f"intended population: {description['intended_use']['population']}")
        if description.get("ood_check"):
            st.caption(f"out-of-domain check: {description['ood_check']}")


def show_release(model_path: Path, released: bool, identity: access.Identity) -> None:
    """An admin releases the model shown for reading, or withdraws it (checked and audited in xraycore)."""
    if not access.can(identity, access.RELEASE_MODELS) or releases.is_bundled(model_path):
        return
    with st.sidebar:
        st.caption("Released for reading: readers may answer with it." if released else
                   "Not released: only researchers and admins see it, as a research preview.")
        if st.button("Withdraw from readers" if released else "Release for reading", key="release_model",
                     icon=":material/undo:" if released else ":material/verified:"):
            try:
                (releases.withdraw if released else releases.release)(model_path, identity=identity)
            except (access.AccessDenied, ValueError) as error:
                st.error(str(error))
            else:
                st.rerun()


def _number(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"


def wanted_sources(uploads: list, samples: list[Path]) -> dict[str, tuple[str, object]]:
    """key → (name shown, source). Keys are stable across reruns, so nothing is scored twice."""
    sources: dict[str, tuple[str, object]] = {}
    for upload in uploads:
        sources[f"upload:{upload.file_id}"] = (upload.name, upload)
    for path in samples:
        sources[f"sample:{path}"] = (catalog.sample_label(path), path)
    for name, image in st.session_state.get(WORKLIST_OPEN_KEY, {}).items():  # opened from the Worklist page
        sources[f"pacs:{name}"] = (name, image)
    return sources


def score_missing(predictor: Predictor, sources: dict, model: tuple, cam: str) -> dict:
    """Score what the session has not scored yet with this model and heat-map method (in batches, with a progress
    bar); forget the rest."""
    stored = catalog.session_results(st.session_state.get(RESULTS_KEY), model, cam, sources)
    # Kept as it fills: a click mid-batch reruns the page, and what was scored is not scored again.
    st.session_state[RESULTS_KEY] = stored
    results = stored["results"]
    missing = [key for key in sources if key not in results]
    if missing:
        progress = st.progress(0.0, text=f"Reading and scoring {len(missing)} image(s)…")
        for start in range(0, len(missing), BATCH_SIZE):
            chunk = missing[start:start + BATCH_SIZE]
            batch = [(sources[key][0], _as_source(sources[key][1])) for key in chunk]
            scored = list(predictor.predict_sources(batch, cam=cam, batch_size=BATCH_SIZE, identity=identity))
            for key, prediction in zip(chunk, scored):
                results[key] = catalog.for_display(prediction)
            uploaded = [p for key, p in zip(chunk, scored) if not isinstance(sources[key][1], Path)
                        and not key.startswith("pacs:")]  # the Worklist recorded its films when it scored them
            if uploaded and (problem := monitoring_view.record_uploads(predictor, uploaded)):
                st.warning(problem)
            done = min(start + BATCH_SIZE, len(missing))
            progress.progress(done / len(missing), text=f"Scored {done} of {len(missing)} image(s)")
        progress.empty()
    return results


def _as_source(item: object) -> object:
    """An upload's bytes, wrapped in memory; a bundled sample's path."""
    return item if isinstance(item, Path) else bytes_source(item.getvalue())


def show_downloads(key: str, result: catalog.DisplayResult, item: object, threshold: float | None,
                   point: str | None, model: provenance.ModelProvenance, opacity: float) -> None:
    """This image's printable report and, for a DICOM, its results filed in the source study (made on click)."""
    stem = Path(result.name).stem or "scan"
    columns = st.columns(3)
    columns[0].download_button("Report (PDF)", lambda: report_pdf.build([result], threshold=threshold,
                               operating_point=point, model=model, alpha=opacity),
                               file_name=f"{stem}_report.pdf", mime="application/pdf", key=f"pdf:{key}",
                               on_click="ignore", icon=":material/print:")
    # A PACS film's results carry the PACS's patient module: only for who may retrieve (xraycore refuses too).
    if result.ok and result.is_dicom and not result.not_assessed and dicom_out.may_download(item, identity):
        columns[1].download_button("Result (DICOM SR)", lambda: dicom_out.display_report(
            item, result, threshold, point, model, identity=identity), file_name=f"{stem}_sr.dcm",
            mime="application/dicom", key=f"sr:{key}", on_click="ignore")
        if result.heatmap is not None:
            columns[2].download_button("Overlay (DICOM)", lambda: dicom_out.display_capture(
                item, result, model, opacity, identity=identity), file_name=f"{stem}_overlay.dcm",
                mime="application/dicom", key=f"sc:{key}", on_click="ignore")


def show_result(result: catalog.DisplayResult, threshold: float | None, opacity: float, outline: bool = False) -> None:
    """One detail card: probability and call, warnings, the scan and its Grad-CAM overlay."""
    with st.container(border=True):
        st.markdown(f"#### {result.name}")
        if not result.ok:
            st.error(result.error)
            return
        for warning in catalog.lead_warnings(result):  # outside the intended population, out of domain: first
            st.warning(warning, icon=":material/warning:")
        if result.not_assessed:  # not a chest X-ray: no probability, no call (triage decides)
            for warning in catalog.other_warnings(result):
                st.warning(warning, icon=":material/warning:")
            st.markdown(f"Call: **{triage.not_assessed_text(result.not_assessed)}**")
            st.image(result.image, caption="original", clamp=True, width=320)
            return
        call = result.call(threshold)
        left, middle, right = st.columns([1, 2, 2])
        with left:
            if result.positive_class is not None:
                st.metric(catalog.probability_label(f"P({result.positive_class})", result),
                          catalog.format_probability(result.positive_probability))
                flag = ":red" if call == result.positive_class else ":green"
                st.markdown(f"Call: **{flag}[{call}]**  \nat threshold {threshold:.3f}")
            else:
                if result.not_normal_probability is not None:
                    st.metric(catalog.probability_label(f"P(not {result.normal_class})", result),
                              catalog.format_probability(result.not_normal_probability),
                              help="1 − P(normal): the probability of any of the model's findings")
                st.markdown(f"Call: **{call}** (most probable class)")
            if len(result.probabilities) > 2 or result.positive_class is None:
                st.dataframe({"class": list(result.probabilities),
                              "probability": [round(p, 4) for p in result.probabilities.values()]},
                             hide_index=True)
            for warning in catalog.other_warnings(result):
                st.warning(warning, icon=":material/warning:")
        with middle:
            st.image(result.image, caption="original", clamp=True, width="stretch")
        with right:
            if result.heatmap is not None:
                overlay = explain.overlay(result.image / 255.0, result.heatmap.astype("float32"), alpha=opacity)
                attention = result.lung_attention  # the share on the lungs, in words
                if outline and attention.fields.found:
                    overlay = draw_outline(overlay, attention.fields.mask)
                method = explain.METHOD_LABELS.get(result.cam_method or "", result.cam_method)
                st.image(overlay, caption=f"{method} overlay", width="stretch")
                st.caption(catalog.colour_legend(result.positive_class or call))
                for sentence in attention.sentences:
                    (st.warning if sentence == OUTSIDE_SENTENCE else st.caption)(sentence)
                if float(result.heatmap.max()) < 0.01 and EMPTY_SENTENCE not in attention.sentences:
                    st.caption(f"The heat map is flat: no region pushes the model towards {result.positive_class or call}.")


identity = webauth.require(access.SCORE)
st.title("Diagnose")
st.caption("Pneumonia probability for chest X-rays (PNG, JPEG or DICOM). A decision aid: the radiologist decides.")

model_path = catalog.chosen_model_dir(st.session_state.get("model_path"), identity)
if model_path is None:
    st.info("No model is available yet. Train one on the Train page (or install the bundled model in models/default).")
    st.stop()
try:  # a reader scores with released models only; researchers may preview the others
    released = releases.require_released(model_path, identity)
except access.AccessDenied as refusal:
    st.error(str(refusal), icon=":material/block:")
    st.stop()
if not released:
    st.warning(f"**{releases.PREVIEW_BANNER}**: readers do not see this model. An administrator releases it for "
               "reading (sidebar, or `python -m xraycore release --model DIR`).", icon=":material/science:")

# The uploader first: on screen before the model loads and the sidebar's tables are drawn (pandas alone takes
# about a second to import on a cold start).
uploads = st.file_uploader("Chest X-rays (PNG, JPEG or DICOM)", accept_multiple_files=True, key="uploads")
samples = catalog.sample_images()
chosen_samples: list[Path] = []
if samples:
    by_label = {catalog.sample_label(path): path for path in samples}
    picked = st.multiselect("…or try bundled sample scans", list(by_label), key="samples")
    chosen_samples = [by_label[label] for label in picked]

engines = [backend.AUTO, *(name for name in backend.BACKENDS if backend.installed(name))]
engine = st.sidebar.selectbox("Inference backend", engines, format_func=BACKEND_LABELS.get, key="backend",
                              help="Automatic: ONNX Runtime on the CPU when the model has an exported graph "
                                   "(python -m xraycore export --format onnx), PyTorch otherwise or on a GPU.")
try:
    predictor = model_cache.load_predictor(model_path, engine)
except (ModelDirectoryError, backend.BackendUnavailable) as error:
    st.error(str(error))
    st.stop()
description = predictor.describe()
monitoring_view.alert_banner(model_path, identity, catalog.model_version(model_path))
show_model(description)
show_release(model_path, released, identity)

with st.sidebar:
    st.subheader("Display")
    methods = predictor.cam_methods()
    cam = st.selectbox("Heat map method", methods, key="cam_method", disabled=not methods,
                       help="Where the network looked. Grad-CAM is the usual choice; for this model it comes from "
                            "the forward pass that gives the probability." if predictor.one_pass_cam else
                            "Where the network looked. Grad-CAM is the usual choice.")
    opacity = st.slider("Overlay opacity", 0.0, 1.0, 0.4, 0.05, key="cam_opacity")
    outline = st.checkbox("Outline the estimated lung fields", value=False, key="lung_outline",
                          help="The lung fields as estimated from the film (docs/heat-maps.md): the share of the heat "
                               "map on them is given under each overlay. The heat map itself is never masked.")
    threshold = predictor.threshold
    if predictor.positive_class is not None:
        # Keyed by model and saved value: saving a new operating point resets this slider to it.
        threshold = st.slider("Threshold for this session", 0.0, 1.0, float(predictor.threshold), 0.001, format="%.3f",
                              key=f"threshold:{model_path}:{predictor.threshold}",
                              help="Try another threshold here; save one for good on the Operating point page.")

sources = wanted_sources(list(uploads or []), chosen_samples)
if not sources:
    st.info("Drop one or more scans above to see the probability of pneumonia and where the model looked.")
    st.session_state.pop(RESULTS_KEY, None)
    st.stop()

# Imported once there is something to report on, not before the uploader: highdicom and fpdf2 take ~0.7 s to
# import on 2 cores, a third of the start-up budget (#18).
from xraycore.reading_room import dicom_out  # noqa: E402
from xraycore.reading_room import pdf_report as report_pdf

model_key = (str(model_path), catalog.model_version(model_path), predictor.backend)
results = score_missing(predictor, sources, model_key, cam)
keys = sorted(sources, key=lambda key: catalog.triage_key(results[key]))  # triage: groups, most probable first
ordered = [results[key] for key in keys]
model = model_cache.model_provenance(model_path)
point = predictor.operating_point if threshold == predictor.threshold else \
    f"{predictor.operating_point}, threshold changed for this session"

rows = catalog.summary_rows(ordered, threshold)
st.subheader("Summary")
st.caption("Most probable first; then the films outside the model's domain (probability not reliable), the films "
           "not assessed (not a chest X-ray: no call) and the files that could not be read.")
st.dataframe(rows, hide_index=True, width="stretch", placeholder="", column_config={
    "threshold": st.column_config.NumberColumn(format="%.3f"),
    "probability": st.column_config.TextColumn(help="P(positive class), else P(not normal), else the top class's"),
    **{name: st.column_config.NumberColumn(format="%.4f") for row in rows for name in row if name.startswith("P(")}})
left, right = st.columns(2)
summary_csv = catalog.summary_csv(ordered, threshold, model=model.name, model_version=model.version,
                                  operating_point=point, date=datetime.date.today().isoformat())
left.download_button("Download the summary (CSV)", summary_csv, file_name="xray_summary.csv",
                     mime="text/csv", key="download_summary", on_click="ignore")
right.download_button("Printable report of all images (PDF)", lambda: report_pdf.build(
    ordered, threshold=threshold, operating_point=point, model=model, alpha=opacity), file_name="xray_report.pdf",
    mime="application/pdf", key="download_report", on_click="ignore", icon=":material/print:")

page_count = max(1, -(-len(ordered) // PER_PAGE))
page = st.number_input(f"Page (of {page_count})", 1, page_count, 1, key="result_page") if page_count > 1 else 1
for key in keys[(page - 1) * PER_PAGE: page * PER_PAGE]:
    show_result(results[key], threshold, opacity, outline)
    read_form.read_controls(key, results[key], results[key].call(threshold), model_path, identity)
    show_downloads(key, results[key], sources[key][1], threshold, point, model, opacity)
