"""Train: set up a run, launch it in the background, follow it, stop it, continue it.

The run is a separate process (``xraycore.jobs``): reloading or closing this page does not touch it,
and the page reads its progress from the run directory every two seconds.
"""
from __future__ import annotations

import streamlit as st

from xraycore import catalog

if note := catalog.full_install_note("training"):  # checked before importing what only the full install has
    st.title("Train")
    st.info(note)
    st.stop()

from xraycore import figures, jobs, models, presets, runs  # noqa: E402
from xraycore.config import LOSSES, OPTIMIZERS, SCHEDULES  # noqa: E402
from xraycore.data import AUGMENTATIONS  # noqa: E402

PRESET_BACKBONES = "(every backbone of the preset)"
SPLITS = {"ratio": "ratio: carve validation out of the data", "folder": "folder: use the val/ folder",
          "auto": "auto: val/ if present, else ratio", "kfold": "k-fold cross-validation"}
PRETRAINED = {"hub": "ImageNet weights from the hub", "none": "none (random initialisation)",
              "file": "a local weights file"}
DEFAULTS = {  # form state, set once per session; a preset overwrites it
    "train_preset": "", "train_data": "", "train_run_id": "", "train_backbone": "mobilenetv2_100",
    "train_pretrained": "hub", "train_weights_file": "", "train_loss": "weighted_ce", "train_optimizer": "adam",
    "train_schedule": "none", "train_epochs": 10, "train_batch_size": 32, "train_image_size": 0,
    "train_lr": 1e-3, "train_augment": ["hflip"], "train_split": "ratio", "train_val_fraction": 0.2,
    "train_folds": 5, "train_processes": 1,
}


def apply_preset() -> None:
    """Pre-fill the form from the chosen preset (the user can still change every field)."""
    name = st.session_state["train_preset"]
    if not name:
        return
    preset = presets.load(name)
    config = preset["config"]
    backbones = preset["backbones"]
    st.session_state["train_backbone"] = backbones[0] if len(backbones) == 1 else PRESET_BACKBONES
    for field in ("loss", "optimizer", "schedule", "epochs", "batch_size", "lr", "val_fraction"):
        if field in config:
            st.session_state[f"train_{field}"] = type(DEFAULTS[f"train_{field}"])(config[field])
    st.session_state["train_image_size"] = int(config.get("image_size") or 0)
    names = [jobs.augment_name(spec) for spec in config.get("augment", [])]
    st.session_state["train_augment"] = [name for name in names if name in AUGMENTATIONS]
    if config.get("folds"):
        st.session_state["train_split"], st.session_state["train_folds"] = "kfold", int(config["folds"])
    elif config.get("split") in SPLITS:
        st.session_state["train_split"] = config["split"]


def form_options(preset_augment: list) -> dict:
    """The form's values as TrainConfig fields; paths are validated here (ValueError otherwise)."""
    state = st.session_state
    options = {
        "data": str(jobs.validate_directory(state["train_data"])),
        "preset": state["train_preset"] or None,
        "backbone": None if state["train_backbone"] == PRESET_BACKBONES else state["train_backbone"],
        "pretrained": (str(jobs.validate_file(state["train_weights_file"]))
                       if state["train_pretrained"] == "file" else state["train_pretrained"]),
        "loss": state["train_loss"], "optimizer": state["train_optimizer"], "schedule": state["train_schedule"],
        "epochs": int(state["train_epochs"]), "batch_size": int(state["train_batch_size"]),
        "image_size": int(state["train_image_size"]) or None, "lr": float(state["train_lr"]),
        "augment": jobs.augment_specs(state["train_augment"], preset_augment),
    }
    if options["backbone"] is None and not options["preset"]:
        raise ValueError("Choose a backbone (or a preset whose backbones should all be trained).")
    if state["train_split"] == "kfold":
        options["folds"] = int(state["train_folds"])
    else:
        options["split"] = state["train_split"]
        options["val_fraction"] = float(state["train_val_fraction"])
    return options


def launch_form() -> None:
    """The training form; submitting it validates the settings and starts a background job."""
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)
    st.selectbox("Preset (optional: pre-fills the form)", ["", *presets.names()], key="train_preset",
                 on_change=apply_preset, format_func=lambda name: name or "none")
    preset_name = st.session_state["train_preset"]
    preset_augment = presets.load(preset_name)["config"].get("augment", []) if preset_name else []
    with st.form("train_form"):
        first, second, third = st.columns(3)
        with first:
            st.text_input("Data folder (one sub-folder per class)", key="train_data")
            st.selectbox("Backbone", [PRESET_BACKBONES, *models.list_backbones()], key="train_backbone")
            st.radio("Pretrained weights", list(PRETRAINED), format_func=PRETRAINED.get, key="train_pretrained")
            st.text_input("Local weights file (for 'a local weights file')", key="train_weights_file")
            st.text_input("Run name (optional)", key="train_run_id",
                          help="Letters, digits, '.', '_' and '-'. Default: time and backbone.")
        with second:
            st.selectbox("Loss", LOSSES, key="train_loss")
            st.selectbox("Optimiser", OPTIMIZERS, key="train_optimizer")
            st.selectbox("Learning-rate schedule", SCHEDULES, key="train_schedule")
            st.number_input("Learning rate", min_value=1e-6, max_value=1.0, format="%.5f", key="train_lr")
            st.number_input("Epochs", min_value=1, max_value=500, step=1, key="train_epochs")
            st.number_input("Batch size", min_value=1, max_value=1024, step=1, key="train_batch_size")
            st.number_input("Image size (0 = the backbone's)", min_value=0, max_value=1024, step=16,
                            key="train_image_size")
        with third:
            st.multiselect("Augmentations", sorted(AUGMENTATIONS), key="train_augment")
            st.radio("Validation", list(SPLITS), format_func=SPLITS.get, key="train_split")
            st.slider("Validation share (ratio split)", 0.05, 0.5, step=0.05, key="train_val_fraction")
            st.number_input("Folds (k-fold)", min_value=2, max_value=20, step=1, key="train_folds")
            gpus = jobs.available_gpus()
            if gpus > 1:
                st.number_input("Processes (one per GPU, via torchrun)", min_value=1,
                                max_value=gpus, step=1, key="train_processes")
        submitted = st.form_submit_button("Start training", type="primary")
    if submitted:
        try:
            options = form_options(preset_augment)
            job = jobs.launch(options, st.session_state["train_run_id"].strip() or None,
                              processes=int(st.session_state["train_processes"]))
        except (ValueError, FileExistsError) as error:
            st.error(str(error))
        else:
            st.session_state["train_job"] = job.id
            st.success(f"Started {job.id} in the background (log: {job.log_path}).")


def continue_panel() -> None:
    """Stopped, killed or failed runs and studies, continued from their last completed epoch."""
    choices = jobs.resumable()
    if not choices:
        return
    with st.expander(f"Continue a stopped or interrupted run or study ({len(choices)})"):
        ref = st.selectbox("Run or study", choices, key="resume_ref",
                           help="A study keeps its finished runs, continues the stopped one and starts the rest.")
        if st.button("Continue", key="resume_go"):
            try:
                job = jobs.resume(ref)
            except (ValueError, RuntimeError) as error:
                st.error(str(error))
            else:
                st.session_state["train_job"] = job.id
                st.success(f"Continuing {ref} in the background (log: {job.log_path}).")


@st.fragment(run_every=2)
def progress_panel() -> None:
    """This session's job (or the newest running one) with live curves, then every run so far."""
    job = jobs.current_job(st.session_state.get("train_job"))
    if job is not None:
        st.subheader(f"Job {job.id}: {job.state()}")
        for run in job.runs():
            status, history = run.status(), run.metrics()
            st.markdown(f"**{run.id}**: {status.get('state')} · epoch {status.get('epoch', 0)} of "
                        f"{status.get('epochs', '?')} · {status.get('message', '')}")
            if status.get("state") == runs.RUNNING and st.button("Stop", key=f"stop:{run.id}",
                                                                 help="Stop after the current batch"):
                jobs.stop(run)
                st.info("Asked the run to stop after the current batch.")
            if history:
                for column, (metric, key) in zip(st.columns(2), (("train_loss", "loss"), ("val_auroc", "auroc"))):
                    column.plotly_chart(figures.training_curves_figure({run.id: history}, metric),
                                        key=f"{key}:{run.id}")
        if job.alive() and not job.runs() and st.button("Stop", key=f"stopjob:{job.id}"):
            jobs.stop_job(job)
        with st.expander("Log"):
            st.code(job.log_tail(30) or "(no output yet)", language=None)
    st.subheader("Runs")
    summaries = [run.summary() for run in runs.list_runs()]
    if summaries:
        st.dataframe(summaries, hide_index=True, width="stretch",
                     column_order=["id", "state", "backbone", "study", "epochs", "best_metric", "best_value",
                                   "started", "ended"])
    else:
        st.caption(f"No runs yet in {runs.runs_root()}.")


st.title("Train")
launch_form()
continue_panel()
progress_panel()
