"""``python -m xraycore VERB``: the parser and one module per group of verbs.

    adapt_verbs         The `adapt` verb: fine-tune a model on a site's labelled films into a site profile,
                        with a progress bar
    clinical_verbs      The clinical-governance verbs: `calibrate` (a site's operating point), `operating-
                        point` (which one answers), `release` (which models readers see) and `audit` (who did
                        what)
    data_verbs          The data verb: `build-dataset`: a class-folder dataset made from folders already on
                        disk (symlinks, or copies), printed as its counts per class
    main                `python -m xraycore VERB ...`: everything the app does, from a terminal
    messages            Where the CLI's words go: results meant for people or programs on stdout, messages and
                        progress on stderr
    model_verbs         The model-directory verbs: `export`, `bundle`, `ood-expose` and `selfcheck`: what a
                        maintainer does to a model before it ships, and what an installation checks after
    monitor_verbs       The monitoring verb: `monitor` (is the model still working? drift, expected and
                        realised performance, alerts)
    parser              The argument parser of `python -m xraycore`: one small function per verb, in the order
                        `--help` lists them
    progress_bars       Progress reporting for the CLI: the trainer's events drawn as tqdm bars on stderr
    reading_room_verbs  The reading-room verb: `pacs`: find chest studies on a PACS, score every image,
                        optionally file the results (SR and overlay) back
    reads_verbs         `python -m xraycore reads ...`: radiologists' reads from a terminal (issue 29)
    scoring_verbs       The scoring verbs: `predict` (files → one answer per file, optionally overlays, DICOM
                        results and a PDF) and `evaluate` (a labelled folder → the numbers)
    shortcuts_verbs     The shortcuts verb: where a model's heat maps look on a labelled folder, and what
                        blanking regions does
    sweep_verbs         The sweep verb: `sweep --preset NAME --data DIR --trials N`: an Optuna search over the
                        preset's `[search]` table, every trial a training run (see xraycore.training.sweep);
                        prints the best run and the one `bundle` command that ships it
    training_verbs      The training verbs: `train`, `runs`, `presets` and `report`: start or resume runs and
                        studies, then look at what they made

The functions and classes named below are importable from this package too; each is imported from its
module on first use, so importing the package is cheap and pulls in no torch.
"""

from __future__ import annotations

from xraycore.common.lazy import lazy_exports

_EXPORTS = {
    "adapt_verbs": ("add_adapt_verb", "cmd_adapt"),
    "clinical_verbs": ("cmd_calibrate", "cmd_operating_point", "cmd_release", "cmd_audit"),
    "data_verbs": ("cmd_build",),
    "messages": ("say",),
    "model_verbs": ("cmd_selfcheck", "cmd_export", "cmd_bundle", "cmd_ood_expose"),
    "monitor_verbs": ("cmd_monitor",),
    "parser": ("split_names", "build_parser"),
    "progress_bars": ("TqdmProgress",),
    "reading_room_verbs": ("cmd_pacs",),
    "reads_verbs": ("cmd_reads",),
    "scoring_verbs": ("cmd_evaluate", "cmd_predict"),
    "shortcuts_verbs": ("add_shortcuts_verb", "cmd_shortcuts"),
    "sweep_verbs": ("cmd_sweep",),
    "training_verbs": ("cmd_train", "cmd_runs", "cmd_presets", "cmd_report"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
