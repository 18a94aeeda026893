"""Train: set up a run, see what it will start from and how long it will take, launch it in the background,
follow it batch by batch, stop it, continue it, start again from an earlier run's settings.

The form is generated from the training config's groups (one expander each; labels, help and choices from
``xraycore.training.config``, widget values from ``xraycore.app.train_form``), so it offers exactly what the
CLI's ``train`` does. A launch saves the settings in the job's folder and trains exactly those (``train --config``).

The run is a separate process (``xraycore.training.jobs``): reloading or closing this page does not touch it,
and the page reads its progress from the run directory every two seconds (the job, the queue, what can
be continued or deleted and the runs table all refresh together). Jobs beyond the allowed number wait in
a queue shown here; xraycore checks who may launch, stop or delete (the buttons only follow what it would
allow). Plans, estimates and every sentence about a run come from xraycore (estimate, trainview).
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from xraycore.access import policy as access
from xraycore.app import catalog
from xraycore.app import auth as webauth

if note := catalog.full_install_note("training"):  # checked before importing what only the full install has
    st.title("Train")
    st.info(note)
    st.stop()

from xraycore.training import config  # noqa: E402
from xraycore.training import durations as estimate
from xraycore.evaluation import figures
from xraycore.training import jobs
from xraycore import models
from xraycore.training import job_command
from xraycore.training import presets
from xraycore.runs import directory as runs
from xraycore.app import train_form as trainform
from xraycore.app import sweep_panel
from xraycore.training import run_view as trainview
from xraycore.data.augment import AUGMENTATIONS  # noqa: E402
from xraycore.app.train_form import PRESET_BACKBONES  # noqa: E402

OPEN_GROUPS = ("dataset", "model", "optimisation")  # the groups shown unfolded; the rest in closed expanders
NOTICE = "train_notice"  # (kind, text) of the last action's outcome: kept until the next action, across refreshes
STOP_HELP = ("Stops after the current batch; the kept epoch is then scored on the validation and test images "
             "(seconds to a minute) so the run stays usable. No further run of the job starts.")


def tell(kind: str, text: str) -> None:
    """Remember an action's outcome ('success', 'info' or 'error'): the page refreshes itself every two seconds,
    and a message drawn once would vanish with the next refresh."""
    st.session_state[NOTICE] = (kind, text)


def show_notice() -> None:
    kind, text = st.session_state.get(NOTICE) or (None, None)
    if kind:
        getattr(st, kind)(text)


def stop(job: jobs.Job, said: str) -> None:
    """Stop a job (xraycore decides who may) and say so until the next action."""
    try:
        jobs.stop_job(job, identity=identity)
    except (OSError, access.AccessDenied) as error:  # AccessDenied is a PermissionError; a vanished process
        tell("error", str(error))
    else:
        tell("info", said)


def apply_preset() -> None:
    """Pre-fill the form from the chosen preset's recipe (the user can still change every setting)."""
    st.session_state.update(trainform.from_preset(st.session_state["train_preset"], sorted(AUGMENTATIONS)))


def restart_from() -> None:
    """Fill the form with the chosen earlier run's settings and a free name (a reload empties the form; a
    name can be used once)."""
    ref = st.session_state["restart_ref"]
    st.session_state.update(trainform.from_run(runs.open_run(ref).config.get("train") or {}, sorted(AUGMENTATIONS)))
    st.session_state["train_run_id"] = jobs.free_run_id(ref)


def setting_widget(setting: config.Setting, disabled: bool) -> None:
    """One setting's widget, chosen by its kind and choices; label, help and choices come from the config."""
    key, label, help = trainform.key(setting), setting.label, setting.help
    if setting.name == "backbone":
        st.selectbox(label, [PRESET_BACKBONES, *models.list_backbones()], key=key, help=help)
    elif setting.name == "pretrained":
        st.radio(label, trainform.PRETRAINED_CHOICES, key=key, help=help,
                 format_func=lambda choice: "a local weights file" if choice == trainform.WEIGHTS_FILE else choice)
        st.text_input("local weights file", key="train_weights_file", help="for 'a local weights file'")
    elif setting.kind == "specs":
        st.multiselect(label, sorted(AUGMENTATIONS), key=key, help=help)
    elif setting.choices:
        st.selectbox(label, setting.choices, key=key, help=help)
    elif setting.kind == "bool":
        st.checkbox(label, key=key, help=help, disabled=disabled)
    elif setting.kind in ("int", "float"):
        empty = {"value": None} if setting.optional else {}  # only a setting that may be None can be emptied
        st.number_input(label + (" (optional)" if setting.optional else ""), key=key, help=help, **empty,
                        step=1 if setting.kind == "int" else None, format="%d" if setting.kind == "int" else "%g",
                        disabled=disabled)
    else:
        st.text_input(label, key=key, help=help)


def settings_form() -> None:
    """Every setting, one expander per config group; a quick check brings its own epochs, batch size, etc."""
    quick = st.session_state["train_smoke"]
    for group in config.GROUPS:
        shown = [setting for setting in trainform.shown() if setting.group == group]
        if not shown:
            continue
        with st.expander(group.title.capitalize(), expanded=group.name in OPEN_GROUPS):
            st.caption(group.settings.__doc__)
            for column, setting in zip(st.columns(3) * len(shown), shown):
                with column:
                    setting_widget(setting, disabled=quick and setting.name in presets.SMOKE)


@st.cache_data(ttl=30, show_spinner=False)
def image_counts(folder: str) -> estimate.ImageCounts | None:
    """None while the typed folder is empty, outside the allowed roots or not a folder."""
    try:
        return estimate.count_images(jobs.validate_directory(folder))
    except (ValueError, OSError):  # AccessDenied is a PermissionError
        return None


@st.cache_data(ttl=30, show_spinner=False)
def speed_measurements(runs_folder: str) -> list[estimate.Measurement]:
    """Cached per runs folder: another folder's speeds (another server, a test) are never shown for this one."""
    return estimate.measurements(Path(runs_folder))


@st.cache_data(ttl=60, show_spinner=False)
def weights_plan(backbone: str, pretrained: str) -> tuple[str, bool]:
    return models.planned_weights(backbone, pretrained)


def restart_panel() -> None:
    """'Start again from this run's settings': any earlier run fills the form."""
    earlier = [run.id for run in runs.list_runs() if run.config.get("train")]
    if not earlier:
        return
    with st.expander("Start again from an earlier run's settings"):
        st.selectbox("Run", earlier, key="restart_ref")
        st.button("Fill the form from this run", key="restart_go", on_click=restart_from)


def preset_panel(name: str) -> None:
    """What the chosen preset is, where it comes from and which backbones it trains."""
    preset = presets.load(name)
    st.markdown(f"**{preset.get('title', name)}** · source: {preset.get('source', 'not recorded')}")
    st.caption(f"Backbones ({len(preset['backbones'])}): {', '.join(preset['backbones'])}")
    if preset.get("notes"):
        with st.expander("What this preset does"):
            st.write(preset["notes"])


def plan_panel() -> None:
    """Per planned run: the weights it will start from, images, measured speed and estimated duration."""
    smoke = st.session_state["train_smoke"]
    try:
        options = trainform.launch_options(st.session_state)
        configs = presets.expand(jobs.quick_options(options) if smoke else options, smoke=smoke)
    except ValueError as error:
        st.caption(f"Plan: {error}")
        return
    plans = {planned.backbone: weights_plan(planned.backbone, planned.pretrained) for planned in configs}
    for backbone, (sentence, falls_back) in plans.items():
        text = f"**{backbone}** will start from: {sentence}"
        if falls_back:
            st.warning(text, icon=":material/warning:")
        else:
            st.caption(text)
    counts = image_counts(st.session_state["train_data"])
    known = speed_measurements(str(runs.runs_root()))
    st.dataframe(estimate.plan_rows(configs, counts, known, {b: s for b, (s, _) in plans.items()}),
                 hide_index=True, width="stretch")
    total = estimate.total_seconds(configs, counts, known) if counts is not None else None
    st.caption(("In all " + estimate.format_duration(total) if total is not None else
                "Estimated time: " + ("choose a data folder" if counts is None else estimate.NO_MEASUREMENT))
               + "; from the images per second runs of the same backbone measured on this machine, scaled by pixels.")


def run_name_input() -> None:
    """The run's name, with a free one offered when it is taken."""
    st.text_input("Run name (optional)", key="train_run_id",
                  help="Letters, digits, '.', '_' and '-'. Default: time and backbone.")
    wanted = st.session_state["train_run_id"].strip()
    try:
        taken = bool(wanted) and jobs.name_taken(runs.sanitize_run_id(wanted))
    except ValueError as error:
        st.caption(str(error))
        return
    if taken:
        free = jobs.free_run_id(wanted)
        st.warning(f"A run named {wanted!r} exists already; {free!r} is free.")
        st.button(f"Use {free}", key="train_use_free", on_click=st.session_state.update,
                  kwargs={"train_run_id": free})


def launch_form() -> None:
    """The training settings; starting validates them and queues a background job."""
    for key, value in trainform.initial_state(sorted(AUGMENTATIONS)).items():
        st.session_state.setdefault(key, value.copy() if isinstance(value, (list, dict)) else value)
    restart_panel()
    st.selectbox("Preset (optional: pre-fills the form)", ["", *presets.names()], key="train_preset",
                 on_change=apply_preset, format_func=lambda name: name or "none")
    if st.session_state["train_preset"]:
        preset_panel(st.session_state["train_preset"])
    settings_form()
    gpus = job_command.available_gpus()
    if gpus > 1:
        st.number_input("Processes (one per GPU, via torchrun)", min_value=1, max_value=gpus, step=1,
                        key="train_processes")
    st.toggle("Quick check (the CLI's --smoke): a few images per class, small images, one epoch; checks the "
              "recipe end to end in seconds to minutes", key="train_smoke")
    plan_panel()
    run_name_input()
    if st.button("Start training", type="primary", key="train_start"):
        try:
            options = jobs.checked_paths(trainform.launch_options(st.session_state))  # refused before any launch
            job = jobs.launch(options, st.session_state["train_run_id"].strip() or None,
                              processes=int(st.session_state["train_processes"]), identity=identity,
                              smoke=st.session_state["train_smoke"])
        except (ValueError, FileExistsError, access.AccessDenied) as error:
            tell("error", str(error))
        else:
            st.session_state["train_job"] = job.id
            started = f"Queued (behind {job.ahead} job(s))" if job.ahead else "Started"
            tell("success", f"{started} {job.id} in the background (log: {job.log_path}).")


def continue_panel() -> None:
    """Stopped, killed or failed runs and studies, continued from their last completed epoch (a run that
    never completed one starts again from the beginning)."""
    choices = jobs.resumable()
    if not choices:
        return
    with st.expander(f"Continue a stopped or interrupted run or study ({len(choices)})"):
        ref = st.selectbox("Run or study", choices, key="resume_ref",
                           help="A study keeps its finished runs, continues the stopped one and starts the rest. "
                                "A run stopped before its first epoch ended starts again from the beginning.")
        if st.button("Continue", key="resume_go"):
            try:
                job = jobs.resume(ref, identity=identity)
            except (ValueError, RuntimeError, access.AccessDenied) as error:
                tell("error", str(error))
            else:
                st.session_state["train_job"] = job.id
                tell("success", f"Continuing {ref} in the background (log: {job.log_path}).")


def job_panel(job: jobs.Job) -> None:
    """One job: each run's progress line and bar, the weights it really started from, Stop, live curves."""
    st.subheader(f"Job {job.id}: {job.state()}")
    training = any(run.status().get("state") == runs.RUNNING for run in job.runs())
    # The job's Stop first: on a busy server a two-second redraw may be cut short before the charts below end
    if (job.alive() and not training and jobs.may_stop(identity, job.owner)  # loading, or between a study's runs
            and st.button("Stop", key=f"stopjob:{job.id}", help="Stops the job: no further run of it starts.")):
        stop(job, "Asked the job to stop: no further run of it starts.")
    for run in job.runs():
        status = run.status()
        st.markdown(f"**{run.id}**: {trainview.status_line(status)}")
        fraction = trainview.progress_fraction(status)
        if fraction is not None and status.get("state") == runs.RUNNING:
            st.progress(fraction)
        note, fell_back = trainview.weights_note(run.config)
        if fell_back:
            st.warning(note, icon=":material/warning:")
        else:
            st.caption(note)
        if (status.get("state") == runs.RUNNING and jobs.may_stop(identity, job.owner)
                and st.button("Stop", key=f"stop:{run.id}", help=STOP_HELP)):
            stop(job, "Asked the job to stop: its run ends after the current batch, once its kept epoch is scored; "
                      "no further run of it starts.")
        history = run.metrics()
        if history:
            for column, (metric, key) in zip(st.columns(2), (("train_loss", "loss"), ("val_auroc", "auroc"))):
                column.plotly_chart(figures.training_curves_figure({run.id: history}, metric), key=f"{key}:{run.id}")
    with st.expander("Log"):
        st.code(job.log_tail(30) or "(no output yet)", language=None)


@st.fragment(run_every=2)
def progress_panel() -> None:
    """Everything that changes while jobs run, redrawn together every two seconds: this session's job (or
    the newest running one), the queue, what can be continued or deleted, and every run so far."""
    notice_slot = st.container()  # filled last, so a notice set by a button below shows in the same redraw
    job = jobs.current_job(st.session_state.get("train_job"))
    if job is not None:
        job_panel(job)
    queue_panel()
    continue_panel()
    delete_panel()
    st.subheader("Runs")
    found = runs.list_runs()
    if found:
        st.dataframe(trainview.runs_table(found, st.context.timezone), hide_index=True, width="stretch")
    else:
        st.caption(f"No runs yet in {runs.runs_root()}.")
    with notice_slot:
        show_notice()


def queue_panel() -> None:
    """Jobs waiting for a training slot, first in line first; their owner or an admin may cancel them."""
    waiting = jobs.queue()
    if not waiting:
        return
    st.subheader(f"Waiting for a training slot ({len(waiting)})")
    st.dataframe([{"place": place, "job": job.id, "launched by": job.owner or "?",
                   "queued at": trainview.local_time(job.started, st.context.timezone)}
                  for place, job in enumerate(waiting, 1)], hide_index=True)
    for job in waiting:
        if jobs.may_stop(identity, job.owner) and st.button(f"Cancel {job.id}", key=f"cancel:{job.id}"):
            stop(job, f"{job.id} left the queue.")


def delete_panel() -> None:
    """Admins only: delete a run that is not training."""
    if not access.can(identity, access.DELETE_RUNS):
        return
    candidates = [run.id for run in runs.list_runs() if run.status().get("state") != runs.RUNNING]
    if not candidates:
        return
    with st.expander("Delete a run"):
        ref = st.selectbox("Run to delete", candidates, key="delete_ref")
        sure = st.checkbox("Delete its weights, predictions and logs for good", key="delete_sure")
        if st.button("Delete", key="delete_go", disabled=not sure):
            try:
                jobs.delete_run(ref, identity=identity)
            except (ValueError, access.AccessDenied) as error:
                tell("error", str(error))
            else:
                tell("success", f"Deleted {ref}.")


identity = webauth.require(access.TRAIN)
st.title("Train")
launch_form()
sweep_panel.launch_sweep_form(identity)
progress_panel()
sweep_panel.trials_panel()
