"""Compare: models side by side (the bundled default, runs, or the runs of one study): metrics with CIs,
what to expect on new patients (internal validation beside external evaluations), confusion matrices,
curves, training histories and what was configured differently. All numbers from ``xraycore``."""
from __future__ import annotations

import streamlit as st

from xraycore.access import policy as access
from xraycore.app import catalog
from xraycore.app import auth as webauth

if note := catalog.full_install_note("comparing training runs"):  # checked before importing what only the full install has
    st.title("Compare")
    st.info(note)
    st.stop()

from xraycore.evaluation import comparison  # noqa: E402
from xraycore.evaluation import compare_tables  # noqa: E402
from xraycore.evaluation import figures  # noqa: E402
from xraycore.runs import directory as runs  # noqa: E402

SPLIT = "val"
PER_ROW = 3  # confusion matrices per row
CURVE_METRICS = ("val_auroc", "val_loss", "train_loss", "val_accuracy", "val_f1")


@st.cache_data(max_entries=32, show_spinner="Computing metrics with bootstrap intervals…")
def table(run_paths: tuple[str, ...], beta: float, versions: tuple[float, ...]) -> list[dict]:
    """``versions`` (prediction and operating-point mtimes) invalidate the cache when a run changes."""
    return comparison.comparison_table([runs.Run(path) for path in run_paths], SPLIT, beta, with_ci=True)


identity = webauth.require(access.COMPARE)
st.title("Compare")
# The models Diagnose offers this person (one list: finished and stopped runs alike), with validation predictions.
choices = [choice for choice in catalog.model_choices(identity=identity)
           if runs.Run(choice.path).predictions(SPLIT) is not None]
if len(choices) < 1:
    st.info(f"No model with validation predictions yet (bundled model or runs in {runs.runs_root()}).")
    st.stop()

by_id = {choice.label: runs.Run(choice.path) for choice in choices}
by_path = {choice.path: runs.Run(choice.path) for choice in choices}
studies = comparison.study_names()
mode = st.radio("Compare", ["runs", "a study"], horizontal=True, key="compare_mode",
                disabled=not studies, help=None if studies else "No study (multi-run launch) yet.")
if mode == "a study" and studies:
    name = st.selectbox("Study", studies, key="compare_study")
    # A study's runs by their directory (the labels read "run <id>", never a bare id): those the list offers.
    study = comparison.study_runs(name)
    chosen = [by_path[run.path.resolve()] for run in study if run.path.resolve() in by_path]
    st.caption(f"{len(chosen)} of the study's {len(study)} runs finished (or were stopped) with validation "
               "predictions.")
else:
    ids = st.multiselect("Models (two or more)", list(by_id), default=list(by_id)[:2], key="compare_runs")
    chosen = [by_id[label] for label in ids]
if len(chosen) < 2:
    st.info("Pick at least two models.")
    st.stop()

beta = st.number_input("β of F-β", 0.1, 10.0, 2.0, 0.5, key="compare_beta")
rows = table(tuple(str(run.path) for run in chosen), beta, tuple(catalog.results_version(run.path, SPLIT) for run in chosen))
st.subheader("Internal validation (95% bootstrap CIs), each model at its internal operating point")
st.caption("Internal validation images come from the same collection as each model's training images: "
           "optimistic for new patients. The threshold is each model's internal one (the point fitted on this "
           "split); a site calibration may be the active one (see Operating point). External evaluations below.")
st.dataframe(comparison.display_rows(rows, beta), hide_index=True, width="stretch", placeholder="")
st.plotly_chart(figures.metric_bars_figure(rows, ["precision", "recall", "specificity", "fbeta", "auroc"]),
                key="compare_bars")

st.subheader("What to expect on new patients: internal validation beside external evaluations")
expected = compare_tables.expectation_rows(chosen)
if expected:
    st.dataframe(expected, hide_index=True, width="stretch", placeholder="")
if not compare_tables.has_external(expected):
    st.caption("No external evaluation is recorded for these models: `python -m xraycore evaluate --model DIR "
               "--data FOLDER --save NAME` keeps one.")

heat_rows = compare_tables.shortcut_rows(chosen)  # stored by `python -m xraycore shortcuts --save NAME`
if heat_rows:
    st.subheader("Where the heat maps look: shortcut reports (value and 95% CI)")
    st.caption("Heat-map mass in the outer 10% band, lift on the lung fields, pointing game on boxes around the "
               "lung fields, occlusion probes; limits in docs/heat-maps.md.")
    st.dataframe(heat_rows, hide_index=True, width="stretch", placeholder="")

folded = [run for run in chosen if comparison.fold_number(run) is not None]
if len(folded) >= 2:
    st.subheader("Across folds (mean ± standard deviation)")
    st.dataframe(compare_tables.fold_rows(folded, SPLIT), hide_index=True)

reported = compare_tables.reported_rows(chosen)
if reported:
    st.subheader("Reported by the source study")
    st.caption("Measured by the study's authors on their own test data, with their full recipe: "
               "not on this validation split, and not comparable to a shortened run.")
    st.dataframe(reported, hide_index=True)

st.subheader("Confusion matrices")
for start in range(0, len(chosen), PER_ROW):
    for column, run in zip(st.columns(PER_ROW), chosen[start:start + PER_ROW]):
        matrix, names = comparison.confusion_of(comparison.evaluate_run(run, SPLIT, beta=beta, with_ci=False))
        column.plotly_chart(figures.confusion_matrix_figure(matrix, names, comparison.run_label(run)),
                            key=f"compare_cm:{run.id}")

roc, pr = comparison.curves(chosen, SPLIT)
left, right = st.columns(2)
left.plotly_chart(figures.roc_figure(roc), key="compare_roc")
right.plotly_chart(figures.pr_figure(pr), key="compare_pr")

st.subheader("Training curves")
metric = st.selectbox("Metric", CURVE_METRICS, key="compare_metric")
st.plotly_chart(figures.training_curves_figure({comparison.run_label(run): run.metrics() for run in chosen}, metric),
                key="compare_curves")

st.subheader("Configuration differences")
differences = compare_tables.config_difference_rows(chosen)
if differences:
    st.dataframe(differences, hide_index=True, width="stretch")
else:
    st.caption("The runs were configured identically.")
st.subheader("In MLflow")
st.dataframe(compare_tables.tracking_rows(chosen), hide_index=True, key="compare_tracking")
