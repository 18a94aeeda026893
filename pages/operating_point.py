"""Operating point: choose the threshold at which the model calls pneumonia, and calibrate it on a site's
own labelled sample.

Every number comes from ``xraycore.metrics`` / ``xraycore.evaluate``, every chart from ``xraycore.figures``.
Saving stores a *named* operating point beside the model's shipped one (``xraycore.operating``, admin only,
audited); the shipped point is never overwritten and can always be restored. Diagnose uses the active point
from its next rerun on (its Predictor cache is keyed by the points file's modification time).
"""
from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import numpy as np
import streamlit as st

from xraycore import access, catalog, webauth

if note := catalog.full_install_note("choosing an operating point"):  # checked before importing what only the full install has
    st.title("Operating point")
    st.info(note)
    st.stop()

from xraycore import comparison, evaluate, figures, metrics, operating, runs  # noqa: E402
from xraycore.predict import Predictor  # noqa: E402

SPLIT = "val"
CI_RESAMPLES = 1000
SITE_KEY = "op_site_fit"  # session_state: the last site calibration fitted (previewed, not yet stored)


@st.cache_data(max_entries=16, show_spinner=False)
def load_scores(model_path: str, positive: str | None, version: float) -> tuple[np.ndarray, np.ndarray] | None:
    """(truth, score) one-vs-rest for ``positive``; ``version`` (``catalog.results_version``)
    refreshes the cache when the predictions are rewritten."""
    return comparison.scores(runs.open_run(Path(model_path)), SPLIT, positive)


@st.cache_data(max_entries=64, show_spinner=False)
def bootstrap(truth: np.ndarray, score: np.ndarray, threshold: float, beta: float) -> dict:
    """Cached: a thousand resamples take long enough to make the slider stutter."""
    return metrics.bootstrap_report(truth, score, threshold, beta, n_resamples=CI_RESAMPLES)


@st.cache_resource(max_entries=2, show_spinner="Loading the model…")
def internal_predictor(model_path: str, version: float) -> Predictor:
    """The model at its shipped (internal) point: site calibration fits on its raw logits."""
    return Predictor(model_path, operating_point=operating.INTERNAL)


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def set_value(key: str, value: float) -> None:
    """Callback: set a widget's value before it is drawn again (Streamlit forbids it after)."""
    st.session_state[key] = value


def copy_value(source: str, target: str) -> None:
    """Keep the threshold's slider and its typed box in step."""
    st.session_state[target] = st.session_state[source]


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
shipped = points["points"][operating.INTERNAL]
st.caption(f"Model **{run.id}** · {len(predictions['label'])} validation images · active operating point "
           f"**{active['name']}**" + (f": threshold {active['threshold']:.3f}" if "threshold" in active else ""))

with st.expander(f"Operating points of this model ({len(points['points'])})", expanded=False):
    st.dataframe([{"name": name, "active": name == points["active"], "threshold": point.get("threshold"),
                   "temperature": point.get("temperature"), "β": point.get("beta"), "how": point.get("source"),
                   "saved": point.get("saved"), "by": point.get("saved_by")} for name, point in points["points"].items()],
                 hide_index=True, width="stretch", key="op_points")
    if is_admin and binary:
        choose, reset = st.columns(2)
        to_activate = choose.selectbox("Make active", list(points["points"]), index=list(points["points"]).index(points["active"]),
                                       key="op_activate_name")
        if choose.button("Activate", key="op_activate", disabled=to_activate == points["active"]):
            operating.activate(run.path, to_activate, identity=identity)
            st.rerun()
        if reset.button(f"Reset to the shipped value ({shipped.get('threshold', 0):.3f})", key="op_reset",
                        disabled=points["active"] == operating.INTERNAL):
            operating.reset(run.path, identity=identity)
            st.rerun()
    if points["history"]:
        st.caption("Changes (newest first)")
        st.dataframe([{"time": entry["time"], "user": entry["user"], "action": entry["action"], "point": entry["name"],
                       "old": entry.get("old"), "new": entry.get("new")} for entry in reversed(points["history"][-20:])],
                     hide_index=True, width="stretch", key="op_history")

st.subheader("Choose a threshold on internal validation")
st.caption("These images come from the same collection as the training images: a threshold chosen here is "
           "optimistic for new patients. Calibrate on your own sample below before go-live.")
controls = st.columns(3)
with controls[0]:
    default_positive = class_names[comparison.positive_index(run, class_names)]
    positive = st.selectbox("Positive class (one-vs-rest)", class_names, index=class_names.index(default_positive),
                            key=f"op_positive:{run.path}", disabled=binary)
with controls[1]:
    beta = st.number_input("β of F-β (β > 1 favours recall)", 0.1, 10.0, float(shipped.get("beta", 2.0)), 0.5,
                           key=f"op_beta:{run.path}")

truth, score = load_scores(str(run.path), positive, catalog.results_version(run.path, SPLIT))
best_threshold, best_fbeta = metrics.best_fbeta_threshold(truth, score, beta)
slider_key, typed_key = f"op_threshold:{run.path}:{positive}", f"op_threshold_typed:{run.path}:{positive}"
start = float(shipped.get("threshold", 0.5)) if binary and positive == default_positive else 0.5
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
    point_name = name_column.text_input("Save as operating point named", f"chosen-{date.today():%Y%m%d}",
                                        key="op_save_name")
    confirmed = confirm_column.checkbox(f"Every reader's Diagnose will call at {threshold:.3f} from now on",
                                        key="op_save_confirm")
    if st.button("Save and activate", type="primary", key="op_save", disabled=not confirmed):
        operating.save(run.path, point_name, {"threshold": float(threshold), "beta": float(beta),
                                              "temperature": float(shipped.get("temperature", 1.0)),
                                              "source": "chosen on the Operating point page (internal validation)"},
                       identity=identity)
        st.success(f"Saved and activated {point_name!r}: threshold {threshold:.3f} (β = {beta:g}). "
                   f"The shipped value {shipped.get('threshold', 0):.3f} is kept.")
        st.rerun()
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
           "the model's weights do not change. Nothing is written until an admin saves the result.")
where = st.radio("Sample", ["a labelled folder on this server", "labelled images uploaded here"], horizontal=True,
                 key="op_site_source")
items: list[evaluate.Labelled] = []
sample_name = "uploaded sample"
if where.startswith("a labelled folder"):
    folder = st.text_input("Folder with one sub-folder per class (NORMAL/, PNEUMONIA/)", key="op_site_folder")
    if folder.strip():
        try:
            items, sample_name = evaluate.folder_items(access.inside_roots(folder, "folder")), Path(folder).name
        except (access.AccessDenied, ValueError) as error:
            st.error(str(error))
else:
    uploads_by_class = {name: st.file_uploader(f"{name} images", accept_multiple_files=True, key=f"op_site_upload:{name}")
                        for name in class_names}
    items = [(upload.name, io.BytesIO(upload.getvalue()), name)
             for name, uploads in uploads_by_class.items() for upload in uploads or []]
site_beta = st.number_input("β the site threshold maximises", 0.1, 10.0, 2.0, 0.5, key="op_site_beta")
if st.button(f"Fit on {len(items)} image(s)", key="op_site_fit_button", disabled=not items):
    predictor = internal_predictor(str(run.path), catalog.model_version(run.path))
    with st.spinner(f"Scoring {len(items)} images…"):
        scored = evaluate.score_labelled(predictor, items, positive, identity=identity)
        fitted = evaluate.fit_site_calibration(predictor, scored, site_beta, sample_name, tta=predictor.tta)
    site_truth = scored.binary_truth(positive)
    site_score = metrics.softmax(scored.logits, fitted["temperature"])[:, predictor.positive_index]
    st.session_state[SITE_KEY] = {"model": str(run.path), "point": fitted, "truth": site_truth, "score": site_score,
                                  "skipped": len(scored.skipped)}

fit = st.session_state.get(SITE_KEY)
if fit and fit["model"] == str(run.path):
    point, site_report = fit["point"], fit["point"]["site_report"]
    if point.get("warning"):
        st.warning(point["warning"])
    st.markdown(f"Fitted on **{point['n']}** images ({point['n_positive']} {positive}, {point['n_negative']} other"
                f"{', ' + str(fit['skipped']) + ' unreadable skipped' if fit['skipped'] else ''}): threshold "
                f"**{point['threshold']:.3f}**, temperature **{point['temperature']:.3f}**, F{point['beta']:g}-optimal.")
    cells = st.columns(4)
    for cell, key, title in zip(cells, ("accuracy", "recall", "specificity", "auroc"),
                                ("accuracy", "sensitivity", "specificity", "AUROC")):
        interval = point["site_ci95"].get(key)
        cell.metric(title, _share(site_report[key]))
        if interval:
            cell.caption(f"95% CI {interval[1]:.3f} – {interval[2]:.3f}")
    st.caption("Measured on the sample the point was fitted on: optimistic. "
               f"{operating.describe_cross_fit(point.get('site_cross_fitted'))} Or compare with "
               "`python -m xraycore evaluate --save` on another sample.")
    site_fpr, site_tpr, _ = metrics.roc_curve(fit["truth"], fit["score"])
    both = {"internal validation": (fpr, tpr, report["auroc"]),
            f"site: {sample_name}": (site_fpr, site_tpr, site_report["auroc"])}
    st.plotly_chart(figures.roc_figure(both, point=(1 - site_report["specificity"], site_report["recall"])),
                    key="op_site_roc")
    if is_admin:
        site_name = st.text_input("Save as operating point named", "site", key="op_site_name")
        if st.button("Save and activate the site calibration", type="primary", key="op_site_save"):
            evaluate.save_site_calibration(run.path, site_name, point, identity=identity)
            st.success(f"Saved and activated {site_name!r}. The shipped point is kept.")
            st.rerun()
    else:
        st.caption("Saving a site calibration for everyone needs the admin role.")
