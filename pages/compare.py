"""Compare: runs side by side (or the runs of one study): metrics with CIs, confusion matrices,
curves, training histories and what was configured differently. All numbers from ``xraycore.study``."""
from __future__ import annotations

import streamlit as st

from xraycore import catalog

if note := catalog.full_install_note("comparing training runs"):  # checked before importing what only the full install has
    st.title("Compare")
    st.info(note)
    st.stop()

from xraycore import figures, runs, study  # noqa: E402

SPLIT = "val"
PER_ROW = 3  # confusion matrices per row
CURVE_METRICS = ("val_auroc", "val_loss", "train_loss", "val_accuracy", "val_f1")
TABLE_COLUMNS = ["label", "state", "n", "threshold", "accuracy", "precision", "recall", "specificity",
                 "fbeta", "auroc", "multiclass_accuracy", "macro_auroc", "recall_low", "recall_high",
                 "specificity_low", "specificity_high", "fbeta_low", "fbeta_high", "auroc_low", "auroc_high", "id"]
THREE_DECIMALS = st.column_config.NumberColumn(format="%.3f")


@st.cache_data(max_entries=32, show_spinner="Computing metrics with bootstrap intervals…")
def table(run_paths: tuple[str, ...], beta: float, versions: tuple[float, ...]) -> list[dict]:
    """``versions`` (prediction and operating-point mtimes) invalidate the cache when a run changes."""
    return study.comparison_table([runs.Run(path) for path in run_paths], SPLIT, beta, with_ci=True)


st.title("Compare")
all_runs = [run for run in runs.list_runs() if run.predictions(SPLIT) is not None]
if not all_runs:
    st.info(f"No run with validation predictions in {runs.runs_root()} yet.")
    st.stop()

by_id = {run.id: run for run in all_runs}
studies = study.study_names()
mode = st.radio("Compare", ["runs", "a study"], horizontal=True, key="compare_mode",
                disabled=not studies, help=None if studies else "No study (multi-run launch) yet.")
if mode == "a study" and studies:
    name = st.selectbox("Study", studies, key="compare_study")
    chosen = [run for run in study.study_runs(name) if run.id in by_id]
else:
    ids = st.multiselect("Runs (two or more)", list(by_id), default=list(by_id)[:2], key="compare_runs",
                         format_func=lambda run_id: study.run_label(by_id[run_id]))
    chosen = [by_id[run_id] for run_id in ids]
if len(chosen) < 2:
    st.info("Pick at least two runs.")
    st.stop()

beta = st.number_input("β of F-β", 0.1, 10.0, 2.0, 0.5, key="compare_beta")
rows = table(tuple(str(run.path) for run in chosen), beta, tuple(catalog.results_version(run.path, SPLIT) for run in chosen))
st.subheader("Validation metrics (95% bootstrap CIs), each run at its saved threshold")
shown = [column for column in TABLE_COLUMNS if any(row.get(column) is not None for row in rows)]
st.dataframe(rows, hide_index=True, width="stretch", column_order=shown,
             column_config={column: THREE_DECIMALS for column in shown if column not in ("label", "state", "n", "id")})
st.plotly_chart(figures.metric_bars_figure(rows, ["precision", "recall", "specificity", "fbeta", "auroc"]),
                key="compare_bars")

folded = [run for run in chosen if study.fold_number(run) is not None]
if len(folded) >= 2:
    st.subheader("Across folds (mean ± standard deviation)")
    summary = study.fold_summary(folded, SPLIT)
    st.dataframe([{"metric": key, "mean": value["mean"], "std": value["std"],
                   "mean ± std": f"{value['mean']:.3f} ± {value['std']:.3f}"} for key, value in summary.items()],
                 hide_index=True)

reported = {study.run_label(run): study.reported_numbers(run) for run in chosen}
reported = {label: numbers for label, numbers in reported.items() if numbers}
if reported:
    st.subheader("Reported by the source study")
    st.dataframe([{"run": label, **numbers} for label, numbers in reported.items()], hide_index=True)

st.subheader("Confusion matrices")
for start in range(0, len(chosen), PER_ROW):
    for column, run in zip(st.columns(PER_ROW), chosen[start:start + PER_ROW]):
        matrix, names = study.confusion_of(study.evaluate_run(run, SPLIT, beta=beta, with_ci=False))
        column.plotly_chart(figures.confusion_matrix_figure(matrix, names, study.run_label(run)),
                            key=f"compare_cm:{run.id}")

roc, pr = study.curves(chosen, SPLIT)
left, right = st.columns(2)
left.plotly_chart(figures.roc_figure(roc), key="compare_roc")
right.plotly_chart(figures.pr_figure(pr), key="compare_pr")

st.subheader("Training curves")
metric = st.selectbox("Metric", CURVE_METRICS, key="compare_metric")
st.plotly_chart(figures.training_curves_figure({study.run_label(run): run.metrics() for run in chosen}, metric),
                key="compare_curves")

st.subheader("Configuration differences")
differences = study.config_differences(chosen)
if differences:
    st.dataframe([{"setting": key, **{label: str(value) for label, value in values.items()}}
                  for key, values in differences.items()], hide_index=True, width="stretch")
else:
    st.caption("The runs were configured identically.")
