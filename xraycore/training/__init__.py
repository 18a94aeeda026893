"""Training: loop, validation scoring, optimisation, checkpoints, distributed, config, presets, studies,
background jobs and their queue.

    adaptation          Site adaptation's torch side: fine-tune the tail of a trained network on a site's
                        films, fast on a CPU
    checkpoint          What `--resume` continues from: one checkpoint file per run, holding the last
                        completed epoch
    config              Every setting of a training run, declared once: one dataclass per group a researcher
                        recognises
    distributed         PyTorch distributed (torchrun) glue: which process am I, and how to combine results
    durations           How long a planned run will take here, from the speed finished runs measured on this
                        machine
    job_command         What a training job runs: `python -m xraycore train --config FILE` (or the same
                        through torchrun on several GPUs), in an environment that keeps the app responsive
    job_queue           The training queue: at most `$XRAY_MAX_TRAINING_JOBS` (default 1) jobs train at once;
                        the rest wait in order
    jobs                Training runs launched from the app as background processes that outlive the page
    loop                The training loop: data → model → run directory
    optimisation        How the weights move: the optimiser, the learning-rate schedule (timm.scheduler), the
                        frozen/fine-tune phases and the loss against mixed images (timm's Mixup / CutMix)
    outlier_exposure    Outlier exposure: teach a model's out-of-domain check what films from elsewhere look
                        like
    presets             The studies of `shared/seeds` as named recipes, stored as data in `presets/*.toml`,
                        and how a user's options become configs
    run_data            The images a run learns from: class folders → patient-grouped split (or fold) → one
                        decoded cache, plus the `--watch-data` images scored every epoch
    run_record          What config.json says about a run: rank 0 creates the run directory (or reopens the
                        one being continued) with every fact of the recipe, the data and the machine, and
                        later adds which images each rank trained on
    run_view            What the Train page says about runs, as plain text and table rows
    session             What one training process holds while it trains a run: the recipe, the images, the
                        network, the device and, on rank 0, the run directory
    sharded_prediction  Logits (and out-of-domain features) of a dataset, each rank scoring its share and
                        every rank getting all of them back in order
    stopping            One stop request per training process, honoured in every phase of a run and of a study
    studies             Studies: several runs planned together (the backbones of a preset, the folds of a
                        cross-validation), trained one after the other, and continued by name after a stop or
                        a crash
    sweep               Hyper-parameter sweeps: an Optuna study over the search space a preset declares (its
                        `[search]` table), each trial a normal training run (an MLflow child of the sweep),
                        scored by its internal validation AUROC
    sweep_jobs          Sweeps launched from the app: `python -m xraycore sweep ...` as a background job,
                        queued like any training job (:mod:`jobs`, :mod:`job_queue`): its trials train one
                        after the other when the job's turn comes
    tracking            Experiment tracking with MLflow: every training run is also an MLflow run, so
                        researchers see it in the tool their lab already uses (params, per-epoch metrics,
                        tags, files; a study is a parent run with its runs as children)
    validation          Scoring the model under training: validation metrics every epoch, and once training
                        ends the kept epoch's predictions, temperature, operating point, out-of-domain
                        detector and summary

The functions and classes named below are importable from this package too; each is imported from its
module on first use, so importing the package is cheap and pulls in no torch.
"""

from __future__ import annotations

from xraycore.common.lazy import lazy_exports

_EXPORTS = {
    "adaptation": ("Split", "split_network", "grey_views", "normaliser", "cache_views", "fit_tail",
        "changed_tensors", "tail_logits", "with_delta", "apply_delta"),
    "checkpoint": ("restore", "save", "sync_weights"),
    "config": ("setting", "DataSettings", "ModelSettings", "InputSettings", "FinetuningSettings",
        "OptimisationSettings", "EvaluationSettings", "RuntimeSettings", "OutputSettings", "Group",
        "TrainConfig", "Setting", "settings", "option_names", "flatten", "from_record", "write_file",
        "read_file"),
    "distributed": ("Context", "setup", "is_main_process", "teardown", "broadcast_object", "gather_objects",
        "sum_tensor", "any_flag"),
    "durations": ("Measurement", "measurement_of", "measurements", "best_measurement", "ImageCounts",
        "count_images", "planned_images", "run_seconds", "seconds_left", "format_duration", "plan_rows",
        "total_seconds"),
    "job_command": ("build_command", "job_environment", "default_threads", "available_gpus"),
    "job_queue": ("max_jobs", "locked", "records", "began", "next_sequence", "waiting", "training",
        "ahead_of_new", "my_turn", "wait_for_turn", "run"),
    "jobs": ("validate_directory", "validate_file", "augment_name", "augment_specs", "config_path", "Job",
        "name_taken", "free_run_id", "quick_options", "checked_paths", "resumable", "list_jobs", "queue",
        "current_job", "may_stop", "owner_of", "stop", "stop_job", "delete_run"),
    "loop": ("configure_threads", "train"),
    "optimisation": ("make_optimizer", "warmup_steps", "make_scheduler", "backbone_frozen", "phase_lr",
        "set_phase", "make_mixing", "soft_target_cross_entropy"),
    "outlier_exposure": ("images_in", "processed_bytes", "processed", "features", "FeatureCache", "expose",
        "fit_exposure"),
    "presets": ("names", "load", "expand", "override", "baseline", "changes"),
    "run_data": ("prepare_data",),
    "run_record": ("environment_record", "open_or_create_run", "record_sharding"),
    "run_view": ("status_line", "progress_fraction", "weights_note", "local_time", "took", "best_row",
        "runs_table_row", "runs_table"),
    "session": ("silent", "Splits", "per_process_batch", "uses_channels_last", "Session"),
    "sharded_prediction": ("predict_indices",),
    "stopping": ("listening", "request", "requested", "consume"),
    "studies": ("planned_runs", "plan_path", "load_plan", "names_a_study", "resume_study", "unfinished"),
    "sweep": ("SweepStopped", "SweepPlan", "default_name", "storage_path", "search_space", "suggest",
        "scaled_augment", "trial_config", "kept_auroc", "mark_pruned", "objective", "open_study",
        "retry_interrupted", "finished_trials", "run_sweep", "best_run", "bundle_command", "load_study",
        "trial_rows", "sweep_names"),
    "sweep_jobs": ("sweepable_presets", "launch_sweep"),
    "tracking": ("TrackingWarning", "configure", "enabled", "tracking_uri", "shown", "client",
        "experiment_id", "grouped_params", "git_commit", "xraycore_version", "dataset_fingerprint",
        "weights_sha256", "run_tags", "Tracker", "study_parent", "start", "epoch", "end", "recorded",
        "run_id_of", "update_run"),
    "validation": ("epoch_metrics", "finish"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
