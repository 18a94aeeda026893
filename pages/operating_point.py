"""Operating point: choose the threshold at which the model calls pneumonia, from its validation predictions.

Every number comes from ``xraycore.metrics`` on the run's ``val_predictions.csv``; every chart from
``xraycore.figures``. Saving writes ``operating_point.json`` beside the model, and Diagnose uses it
from its next rerun on (its Predictor cache is keyed by that file's modification time).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from xraycore import catalog

if note := catalog.full_install_note("choosing an operating point"):  # checked before importing what only the full install has
    st.title("Operating point")
    st.info(note)
    st.stop()

from xraycore import figures, metrics, runs, study  # noqa: E402

SPLIT = "val"
CI_RESAMPLES = 1000


@st.cache_data(max_entries=16, show_spinner=False)
def load_scores(model_path: str, positive: str | None, version: float) -> tuple[np.ndarray, np.ndarray] | None:
    """(truth, score) one-vs-rest for ``positive``; ``version`` (``catalog.results_version``)
    refreshes the cache when the predictions are rewritten."""
    return study.scores(runs.open_run(Path(model_path)), SPLIT, positive)


@st.cache_data(max_entries=64, show_spinner=False)
def bootstrap(truth: np.ndarray, score: np.ndarray, threshold: float, beta: float) -> dict:
    """Cached: a thousand resamples take long enough to make the slider stutter."""
    return metrics.bootstrap_report(truth, score, threshold, beta, n_resamples=CI_RESAMPLES)


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def jump_to(key: str, value: float) -> None:
    """Button callback: set a widget's value before it is drawn again (Streamlit forbids it after)."""
    st.session_state[key] = value


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
saved = run.operating_point
saved_text = f"{saved['threshold']:.3f} (β = {saved.get('beta', '–')})" if "threshold" in saved else "none"
st.caption(f"Model **{run.id}** · {len(predictions['label'])} validation images · saved threshold {saved_text}")

controls = st.columns(3)
with controls[0]:
    default_positive = class_names[study.positive_index(run, class_names)]
    positive = st.selectbox("Positive class (one-vs-rest)", class_names, index=class_names.index(default_positive),
                            key=f"op_positive:{run.path}", disabled=binary)
with controls[1]:
    beta = st.number_input("β of F-β (β > 1 favours recall)", 0.1, 10.0, float(saved.get("beta", 2.0)), 0.5,
                           key=f"op_beta:{run.path}")

truth, score = load_scores(str(run.path), positive, catalog.results_version(run.path, SPLIT))
best_threshold, best_fbeta = metrics.best_fbeta_threshold(truth, score, beta)
slider_key = f"op_threshold:{run.path}:{positive}"
start = float(saved.get("threshold", 0.5)) if binary and positive == default_positive else 0.5
with controls[2]:
    threshold = st.slider("Threshold", 0.0, 1.0, start, 0.001, format="%.3f", key=slider_key)
    st.button(f"Use the F{beta:g}-optimal threshold ({best_threshold:.3f}, F{beta:g} = {best_fbeta:.3f})",
              on_click=jump_to, args=(slider_key, best_threshold), key="op_jump")

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

if binary:
    if st.button("Save threshold", type="primary", key="op_save",
                 help="Store this threshold with the model; Diagnose uses it from now on."):
        run.save_operating_point(threshold=float(threshold), beta=float(beta), source="chosen on the Operating point page")
        st.success(f"Saved threshold {threshold:.3f} (β = {beta:g}) with {run.id}.")
else:
    st.caption("A multi-class model calls its most probable class; these one-vs-rest numbers are for analysis.")

negative = study.negative_label(class_names, positive)
fpr, tpr, _ = metrics.roc_curve(truth, score)
precision, recall, _ = metrics.pr_curve(truth, score)
left, right = st.columns(2)
left.plotly_chart(figures.confusion_matrix_figure(np.array(report["confusion_matrix"]), [negative, positive],
                                                  f"Confusion matrix at {threshold:.3f}"), key="op_cm")
right.plotly_chart(figures.threshold_figure(metrics.threshold_sweep(truth, score, beta=beta), threshold, beta),
                   key="op_sweep")
left.plotly_chart(figures.roc_figure({positive: (fpr, tpr, report["auroc"] or float("nan"))},
                                     point=(1 - report["specificity"], report["recall"])), key="op_roc")
right.plotly_chart(figures.pr_figure({positive: (recall, precision, report["auprc"] or float("nan"))},
                                     point=(report["recall"], report["precision"]), prevalence=report["prevalence"]),
                   key="op_pr")
left.plotly_chart(figures.reliability_figure(metrics.reliability_bins(truth, score),
                                             metrics.expected_calibration_error(truth, score),
                                             f"Calibration of P({positive})"), key="op_reliability")
