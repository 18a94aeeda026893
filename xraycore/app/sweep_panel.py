"""The Train page's sweeps: launch one (a queued job, see training.sweep_jobs) and look at a sweep's trials as a
table, Optuna's optimisation history and its parameter importances (plotly)."""
from __future__ import annotations

from typing import Any

import streamlit as st

from xraycore.access import policy as access
from xraycore.training import sweep, sweep_jobs


def launch_sweep_form(identity: Any) -> None:
    """Preset, data folder, number of trials: one queued sweep job; refusals are one plain sentence."""
    choices = sweep_jobs.sweepable_presets()
    if not choices:
        return
    with st.expander("Launch a sweep (Optuna over a preset's search space)"):
        preset = st.selectbox("Preset", choices, key="sweep_preset")
        data = st.text_input("Data folder (one sub-folder per class)", key="sweep_data")
        trials = st.number_input("Trials", min_value=1, max_value=500, value=20, step=1, key="sweep_trials")
        smoke = st.checkbox("Quick check (tiny images, two epochs per trial)", key="sweep_smoke")
        if st.button("Start sweep", key="sweep_go"):
            try:
                job = sweep_jobs.launch_sweep(preset, data, int(trials), smoke=smoke, identity=identity)
            except (ValueError, FileExistsError, access.AccessDenied) as error:
                st.error(str(error))
            else:
                st.session_state["train_job"] = job.id
                st.success(f"Sweep {job.id} queued" + (f" behind {job.ahead} job(s)." if job.ahead else " and started."))


def trials_panel() -> None:
    """A chosen sweep's trials, newest sweep first."""
    names = sweep.sweep_names()
    if not names:
        return
    st.subheader("Sweeps")
    name = st.selectbox("Sweep", list(reversed(names)), key="sweep_name")
    study = sweep.load_study(name)
    rows = sweep.trial_rows(name)
    if study is None or not rows:
        st.caption("No trial has started yet.")
        return
    st.dataframe(rows, hide_index=True, width="stretch", key="sweep_trials_table")
    _optuna_figures(study)


def _optuna_figures(study: Any) -> None:
    from optuna import visualization
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        st.caption("The history and the parameter importances appear once a trial has completed.")
        return
    left, right = st.columns(2)
    left.plotly_chart(visualization.plot_optimization_history(study, target_name="validation AUROC"),
                      key="sweep_history")
    if len(complete) < 2 or not complete[0].params:
        right.caption("Parameter importances need two completed trials.")
        return
    try:
        figure = visualization.plot_param_importances(study, target_name="validation AUROC")
    except (ValueError, RuntimeError) as error:  # e.g. every completed trial tried the same values
        right.caption(f"No parameter importances yet: {error}")
        return
    right.plotly_chart(figure, key="sweep_importances")
