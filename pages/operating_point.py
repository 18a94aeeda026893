"""Operating point: see the threshold the model calls pneumonia at, choose another, and calibrate it on a
site's own labelled sample.

The page opens on the *active* point, named, with its own figures (a site calibration's are the site's, cross-fitted
first). Every number comes from ``xraycore.metrics`` / ``xraycore.evaluation.site_calibration``, every chart from
``xraycore.evaluation.figures``. Saving stores a *named* point (``xraycore.clinical.operating_points``, admin only,
audited) at the temperature it was shown with; the point the model shipped active is never overwritten and "Reset"
restores it. Diagnose uses the active point from its next rerun on (its Predictor cache is keyed by the points
file's modification time). What an action answers stays on the page until the next action.
"""
from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import numpy as np
import streamlit as st

from xraycore.access import policy as access
from xraycore.app import catalog
from xraycore.app import auth as webauth

if note := catalog.full_install_note("choosing an operating point"):  # checked before importing what only the full install has
    st.title("Operating point")
    st.info(note)
    st.stop()

from xraycore.evaluation import comparison  # noqa: E402
from xraycore.evaluation import external as evaluate
from xraycore.evaluation import figures
from xraycore import metrics
from xraycore.clinical import operating_points as operating
from xraycore.runs import directory as runs
from xraycore.evaluation import site_calibration
from xraycore.inference.predictor import Predictor  # noqa: E402

SPLIT = "val"
CI_RESAMPLES = 1000
SITE_KEY = "op_site_fit"  # session_state: the last site calibration fitted (previewed, not yet stored)
MESSAGE_KEY = "op_message"  # session_state: (kind, text) of the last action's answer, shown until the next one
CONFIRM_KEY = "op_save_confirm"


@st.cache_data(max_entries=16, show_spinner=False)
def load_scores(model_path: str, positive: str, temperature: float | None,
                version: float) -> tuple[np.ndarray, np.ndarray] | None:
    """(truth, score) one-vs-rest for ``positive`` at ``temperature``; ``version`` (``catalog.results_version``)
    refreshes the cache when the predictions are rewritten."""
    return site_calibration.validation_scores(runs.open_run(Path(model_path)), positive, temperature, SPLIT)


@st.cache_data(max_entries=64, show_spinner=False)
def bootstrap(truth: np.ndarray, score: np.ndarray, threshold: float, beta: float) -> dict:
    """Cached: a thousand resamples take long enough to make the slider stutter."""
    return metrics.bootstrap_report(truth, score, threshold, beta, n_resamples=CI_RESAMPLES)


@st.cache_resource(max_entries=2, show_spinner="Loading the model…")
def internal_predictor(model_path: str, version: float) -> Predictor:
    """The model at its internal point: site calibration fits on its raw logits."""
    return Predictor(model_path, operating_point=operating.INTERNAL)


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _describe(point: dict) -> str:
    return f"threshold {point.get('threshold', 0.5):.3f}, temperature {point.get('temperature', 1.0):.3f}"


def set_value(key: str, value: float) -> None:
    """Callback: set a widget's value before it is drawn again (Streamlit forbids it after)."""
    st.session_state[key] = value


def copy_value(source: str, target: str) -> None:
    """Keep the threshold's slider and its typed box in step."""
    st.session_state[target] = st.session_state[source]


def act(action, success: str, shown_key: str, shown_name: str | None = None) -> None:
    """Callback of every button that changes the model: run ``action``, keep its answer (or its one-sentence
    refusal) for the page until the next action, show the point it made active, clear the confirmation box."""
    try:
        action()
        st.session_state[MESSAGE_KEY] = ("success", success)
        if shown_name:
            st.session_state[shown_key] = shown_name
    except (ValueError, access.AccessDenied) as error:
        st.session_state[MESSAGE_KEY] = ("error", str(error))
    st.session_state[CONFIRM_KEY] = False


def save_chosen(shown: dict, slider_key: str, beta_key: str, shown_key: str) -> None:
    """Callback of Save: the name, threshold and β as they are now (read here, not when the button was drawn),
    at the temperature of the point shown."""
    name, record = st.session_state["op_save_name"].strip(), site_calibration.chosen_point(
        st.session_state[slider_key], st.session_state[beta_key], shown)
    act(lambda: operating.save(run.path, name, record, identity=identity),
        f"Saved and activated {name!r}: {_describe(record)} (the temperature of {shown['name']!r}, the point it "
        f"was chosen on), β = {record['beta']:g}. The shipped point {points['shipped']!r} is kept.", shown_key, name)


def save_site(point: dict, shown_key: str) -> None:
    """Callback of the site calibration's Save, with the name as it is now."""
    name = st.session_state["op_site_name"].strip()
    act(lambda: site_calibration.save_site_calibration(run.path, name, point, identity=identity),
        f"Saved and activated {name!r}: {_describe(point)}. The shipped point {points['shipped']!r} is kept.",
        shown_key, name)


def site_figures(point: dict, sample: str) -> None:
    """A site calibration's figures: on patients it was not fitted on first, then on its own sample with CIs."""
    crossed, site_report = point.get("site_cross_fitted"), point.get("site_report")
    if crossed:
        st.markdown(f"**On patients it was not fitted on** (cross-fitted on {sample}, {point['n']} films):")
        for cell, key, title in zip(st.columns(3), ("accuracy", "sensitivity", "specificity"),
                                    ("accuracy (cross-fitted)", "sensitivity (cross-fitted)", "specificity (cross-fitted)")):
            cell.metric(title, _share(crossed[key]))
    st.caption(operating.describe_cross_fit(crossed))
    if site_report is None:  # a site profile: its figures are all cross-fitted, beside the original model's
        before = point.get("before") or {}
        st.caption(f"Site profile ({point.get('method')}): AUROC {before.get('auroc', float('nan')):.3f} before, "
                   f"{crossed.get('auroc', float('nan')):.3f} after; accuracy before {before.get('accuracy', float('nan')):.3f} "
                   "(the original model's site calibration, cross-fitted on the same films).")
        return
    st.markdown("**On the sample it was fitted on** (optimistic; 95% intervals from refitting on resamples):")
    for cell, key, title in zip(st.columns(4), ("accuracy", "recall", "specificity", "auroc"),
                                ("accuracy (site sample)", "sensitivity (site sample)", "specificity (site sample)",
                                 "AUROC (site sample)")):
        cell.metric(title, _share(site_report.get(key)))
        if interval := (point.get("site_ci95") or {}).get(key):
            cell.caption(f"95% CI {interval[1]:.3f} – {interval[2]:.3f}")


identity = webauth.require(access.PREVIEW_OPERATING_POINT)
is_admin = access.can(identity, access.CHANGE_OPERATING_POINT)
st.title("Operating point")
model_dir = catalog.chosen_model_dir(st.session_state.get("model_path"))
if model_dir is None:
    st.info("No model is available yet. Train one on the Train page.")
    st.stop()
run = runs.open_run(model_dir)
predictions = run.predictions(SPLIT)
if predictions is None:
    st.info(f"{run.id} has no validation predictions, so its operating point cannot be tuned here.")
    st.stop()

class_names = predictions["class_names"]
binary = len(class_names) == 2
points = operating.load(run.path)
active = operating.get(run.path)
shipped = operating.get(run.path, points["shipped"])
st.caption(f"Model **{run.id}** · {len(predictions['label'])} validation images · active operating point "
           f"**{active['name']}**: {_describe(active)}")
if message := st.session_state.get(MESSAGE_KEY):
    getattr(st, message[0])(message[1])

shown_key = f"op_shown:{run.path}"
if st.session_state.get(shown_key) not in points["points"]:
    st.session_state[shown_key] = points["active"]
shown_name = st.selectbox("Operating point shown", list(points["points"]), key=shown_key,
                          format_func=lambda name: name + (" (active)" if name == points["active"] else "")
                          + (" (shipped)" if name == points["shipped"] else ""))
shown = operating.get(run.path, shown_name)
st.markdown(f"**{shown_name}**: {_describe(shown)} · {shown.get('source', '')}")
if (shown.get("kind") == operating.SITE_KIND and shown.get("site_report")) or (
        shown.get("kind") == operating.PROFILE_KIND and shown.get("site_cross_fitted")):
    site_figures(shown, shown.get("source", "the site sample").split(" of ")[-1])

with st.expander(f"Operating points of this model ({len(points['points'])}) and their changes", expanded=False):
    st.dataframe([{"name": name, "active": name == points["active"], "shipped": name == points["shipped"],
                   "threshold": point.get("threshold"), "temperature": point.get("temperature"), "β": point.get("beta"),
                   "how": point.get("source"), "saved": point.get("saved"), "by": point.get("saved_by")}
                  for name, point in points["points"].items()], hide_index=True, width="stretch", key="op_points")
    if points["history"]:
        st.caption("Changes (newest first)")
        st.dataframe([{"time": entry["time"], "user": entry["user"], "action": entry["action"], "point": entry["name"],
                       "old": entry.get("old"), "new": entry.get("new")} for entry in reversed(points["history"][-20:])],
                     hide_index=True, width="stretch", key="op_history")
if is_admin and binary:
    choose, reset = st.columns(2)
    choose.button(f"Make {shown_name!r} active", key="op_activate", disabled=shown_name == points["active"],
                  on_click=act, args=(lambda: operating.activate(run.path, shown_name, identity=identity),
                                      f"Activated {shown_name!r}: {_describe(shown)}.", shown_key))
    reset.button(f"Reset to the shipped point ({shipped['name']}: {_describe(shipped)})", key="op_reset",
                 disabled=points["active"] == points["shipped"], on_click=act,
                 args=(lambda: operating.reset(run.path, identity=identity),
                       f"Reset to the shipped point {shipped['name']!r}: {_describe(shipped)}.", shown_key,
                       shipped["name"]))

st.subheader("Choose a threshold on internal validation")
temperature = float(shown.get("temperature", 1.0))
st.caption(f"Scores at the temperature of {shown_name!r} ({temperature:.3f}). These images come from the same "
           "collection as the training images: a threshold chosen here is optimistic for new patients. "
           "Calibrate on your own sample below before go-live.")
controls = st.columns(3)
with controls[0]:
    default_positive = class_names[comparison.positive_index(run, class_names)]
    positive = st.selectbox("Positive class (one-vs-rest)", class_names, index=class_names.index(default_positive),
                            key=f"op_positive:{run.path}", disabled=binary)
with controls[1]:
    beta_key = f"op_beta:{run.path}"
    beta = st.number_input("β of F-β (β > 1 favours recall)", 0.1, 10.0, float(shown.get("beta", 2.0)), 0.5,
                           key=beta_key)

truth, score = load_scores(str(run.path), positive, temperature, catalog.results_version(run.path, SPLIT))
best_threshold, best_fbeta = metrics.best_fbeta_threshold(truth, score, beta)
slider_key = f"op_threshold:{run.path}:{positive}:{shown_name}"
typed_key = slider_key.replace("op_threshold", "op_threshold_typed")
start = float(shown.get("threshold", 0.5)) if binary and positive == default_positive else 0.5
with controls[2]:
    threshold = st.slider("Threshold", 0.0, 1.0, start, 0.001, format="%.3f", key=slider_key,
                          on_change=copy_value, args=(slider_key, typed_key))
    st.number_input("…or type it", 0.0, 1.0, start, 0.001, format="%.4f", key=typed_key,
                    on_change=copy_value, args=(typed_key, slider_key))
    st.button(f"Use the F{beta:g}-optimal threshold ({best_threshold:.3f}, F{beta:g} = {best_fbeta:.3f})",
              on_click=lambda: (set_value(slider_key, best_threshold), set_value(typed_key, best_threshold)),
              key="op_jump")

report = metrics.binary_report(truth, score, threshold, beta)
intervals = bootstrap(truth, score, threshold, beta)
columns = st.columns(4)
for column, (name, title) in zip(columns, {**figures.RATE_TITLES, "fbeta": f"F{beta:g}"}.items()):
    point, low, high = intervals[name]
    column.metric(title, f"{report[name]:.3f}", help="bootstrap 95% confidence interval, 1000 resamples")
    column.caption(f"95% CI {low:.3f} – {high:.3f}")

prevalence = st.number_input(
    f"Share of {positive} where the model will be used", 0.001, 0.999, round(report["prevalence"], 3), 0.01,
    format="%.3f", key=f"op_prevalence:{run.path}:{positive}",
    help="Validation sets rarely match the ward: precision depends on prevalence, sensitivity and specificity do not.")
expected = metrics.predictive_values(report["recall"], report["specificity"], prevalence)
st.markdown(f"At a prevalence of **{prevalence:.1%}**, this threshold gives precision (PPV) "
            f"**{_share(expected['ppv'])}** and NPV **{_share(expected['npv'])}** "
            f"(validation prevalence {report['prevalence']:.1%}).")

if binary and is_admin:
    name_column, confirm_column = st.columns(2)
    name_column.text_input("Save as operating point named", f"chosen-{date.today():%Y%m%d}", key="op_save_name")
    confirmed = confirm_column.checkbox(f"Every reader's Diagnose will call at {threshold:.3f} (temperature "
                                        f"{temperature:.3f}) from now on", key=CONFIRM_KEY)
    st.button("Save and activate", type="primary", key="op_save", disabled=not confirmed, on_click=save_chosen,
              args=(shown, slider_key, beta_key, shown_key))
elif binary:
    st.caption("A preview: saving a threshold for everyone needs the admin role.")
else:
    st.caption("A multi-class model calls its most probable class; these one-vs-rest numbers are for analysis.")

negative = comparison.negative_label(class_names, positive)
fpr, tpr, _ = metrics.roc_curve(truth, score)
precision, recall, _ = metrics.pr_curve(truth, score)
left, right = st.columns(2)
left.plotly_chart(figures.confusion_matrix_figure(np.array(report["confusion_matrix"]), [negative, positive],
                                                  f"Confusion matrix at {threshold:.3f}"), key="op_cm")
right.plotly_chart(figures.threshold_figure(metrics.threshold_sweep(truth, score, beta=beta), threshold, beta),
                   key="op_sweep")
left.plotly_chart(figures.roc_figure({positive: (fpr, tpr, report["auroc"])},
                                     point=(1 - report["specificity"], report["recall"])), key="op_roc")
right.plotly_chart(figures.pr_figure({positive: (recall, precision, report["auprc"])},
                                     point=(report["recall"], report["precision"]), prevalence=report["prevalence"]),
                   key="op_pr")
left.plotly_chart(figures.reliability_figure(metrics.reliability_bins(truth, score),
                                             metrics.expected_calibration_error(truth, score),
                                             f"Calibration of P({positive})"), key="op_reliability")

# ----------------------------------------------------------------------------- site calibration
if not binary:
    st.stop()
st.subheader("Site calibration: fit on your own labelled sample")
st.caption("Hospitals validate locally before go-live. Temperature and threshold are fitted on your sample; "
           f"the model's weights do not change. Under {operating.MIN_SAMPLE_PER_CLASS} films of each class a fit is "
           "a preview only. Nothing is written until an admin saves the result.")
where = st.radio("Sample", ["a labelled folder on this server", "labelled images uploaded here"], horizontal=True,
                 key="op_site_source")
items: list[evaluate.Labelled] = []
sample_name = "uploaded sample"
if where.startswith("a labelled folder"):
    folder = st.text_input(f"Folder with one sub-folder per class ({', '.join(f'{c}/' for c in class_names)})",
                           key="op_site_folder")
    if folder.strip():
        try:
            items, sample_name = evaluate.folder_items(access.inside_roots(folder, "folder")), Path(folder).name
        except (access.AccessDenied, ValueError, FileNotFoundError) as error:
            st.error(str(error))
else:
    uploads_by_class = {name: st.file_uploader(f"{name} images", accept_multiple_files=True, key=f"op_site_upload:{name}")
                        for name in class_names}
    items = [(upload.name, io.BytesIO(upload.getvalue()), name)
             for name, uploads in uploads_by_class.items() for upload in uploads or []]
site_beta = st.number_input("β the site threshold maximises", 0.1, 10.0, 2.0, 0.5, key="op_site_beta")
try:
    if items:
        site_calibration.check_classes(items, class_names)
    wrong_classes = None
except ValueError as error:
    wrong_classes = str(error)
    st.error(wrong_classes)
if not wrong_classes and st.button(f"Fit on {len(items)} image(s)", key="op_site_fit_button", disabled=not items):
    st.session_state.pop(MESSAGE_KEY, None)
    predictor = internal_predictor(str(run.path), catalog.model_version(run.path))
    with st.spinner(f"Scoring {len(items)} images and fitting…"):
        try:
            st.session_state[SITE_KEY] = {"model": str(run.path), "sample": sample_name,
                                          **site_calibration.preview(predictor, items, site_beta, sample_name, identity)}
        except ValueError as error:
            st.error(str(error))

fit = st.session_state.get(SITE_KEY)
if fit and fit["model"] == str(run.path):
    point = fit["point"]
    st.markdown(f"Fitted on **{point['n']}** images ({point['n_positive']} {positive}, {point['n_negative']} other"
                f"{', ' + str(fit['skipped']) + ' unreadable skipped' if fit['skipped'] else ''}): threshold "
                f"**{point['threshold']:.3f}**, temperature **{point['temperature']:.3f}**, F{point['beta']:g}-optimal.")
    if too_few := operating.sample_warning(point["n_positive"], point["n_negative"]):
        st.warning(too_few)
    if failed := operating.fit_failure(point):
        st.error(failed)
    site_figures(point, fit["sample"])
    site_fpr, site_tpr, _ = metrics.roc_curve(fit["truth"], fit["score"])
    both = {"internal validation": (fpr, tpr, report["auroc"]),
            f"site: {fit['sample']}": (site_fpr, site_tpr, point["site_report"]["auroc"])}
    st.plotly_chart(figures.roc_figure(both, point=(1 - point["site_report"]["specificity"],
                                                     point["site_report"]["recall"])), key="op_site_roc")
    if point.get("warning"):
        st.caption("A preview only: this fit cannot be saved or activated.")
    elif is_admin:
        site_name = st.text_input("Save as operating point named", "site", key="op_site_name")
        st.button("Save and activate the site calibration", type="primary", key="op_site_save", on_click=save_site,
                  args=(point, shown_key))
    else:
        st.caption("Saving a site calibration for everyone needs the admin role.")
