"""Numbers about models: external evaluations, comparisons, figures, study reports, model cards.

    compare_tables       The Compare page's tables as rows: what to expect on new patients, across folds,
                         reported, configured
    comparison           Comparing runs: the numbers behind the Compare page and the HTML study report
    external             Score a model on a labelled folder: the numbers a reviewer asks for, site
                         calibration, and the external evaluations a model directory keeps as records
    figures              Plotly figures from plain arrays, shared by the Streamlit pages and the HTML report
    model_card           Turn a finished run into a shippable model directory with a model card
    point_evidence       What a model's figures rest on, the ACTIVE operating point's first: Diagnose's
                         sidebar and Compare's table
    run_artifacts        A tracked run's model card and figures (confusion matrix, ROC and precision-recall
                         curves) in its MLflow run
    shortcut_probes      The shortcut report of a model on a labelled folder: heat maps and occlusion probes,
                         film by film
    shortcuts            Does a model look at the lungs? The shortcut report's measures, limits and records
    site_adaptation      Site adaptation: a site's labelled films teach every network of a model, and the
                         result is a site profile
    site_adaptation_fit  Site adaptation's fitting, apart from its refusals and storage
                         (:mod:`site_adaptation`) because it imports torch: the views of every film cached
                         once per network, the cross-fitting (each fold adapts every network again from the
                         original weights and scores the films it left out), the final fit on every film, and
                         the proof that the exported graphs answer with the adapted weights as torch does
    site_calibration     Site calibration and the Operating point page's records: what the page used to build
                         itself
    study_report         One self-contained HTML file per study: `python -m xraycore report STUDY`

The functions and classes named below are importable from this package too; each is imported from its
module on first use, so importing the package is cheap and pulls in no torch.
"""

from __future__ import annotations

from xraycore.common.lazy import lazy_exports

_EXPORTS = {
    "compare_tables": ("expectation_rows", "has_external", "fold_rows", "reported_rows",
        "config_difference_rows", "tracking_rows", "shortcut_rows"),
    "comparison": ("run_label", "fold_number", "positive_index", "negative_label", "scores", "evaluate_run",
        "confusion_of", "comparison_table", "curves", "training_settings", "config_differences",
        "study_names", "study_runs", "resolve_runs", "fold_summary", "reported_numbers", "display_rows"),
    "external": ("ScoredFolder", "folder_items", "score_labelled", "score_folder", "evaluate_folder",
        "save_evaluation", "list_evaluations", "evidence"),
    "figures": ("confusion_matrix_figure", "roc_figure", "pr_figure", "reliability_figure",
        "threshold_figure", "training_curves_figure", "curve_axis_range", "metric_bars_figure"),
    "model_card": ("validation_figures", "intended_population_section", "evidence_section",
        "operating_points_section", "bundle_model", "bundle_ensemble"),
    "point_evidence": ("active_point_row", "ordered_evidence"),
    "run_artifacts": ("track_figures",),
    "shortcut_probes": ("blanked", "probe_films", "shortcut_report"),
    "shortcuts": ("band_mask", "corner_mask", "heat_measures", "summarise", "verdict", "save_report",
        "list_reports", "figure_rows", "card_section", "compare_rows"),
    "site_adaptation": ("adapt_folder", "read_films", "list_profiles", "describe_figures"),
    "site_adaptation_fit": ("adapt_networks", "check_graph"),
    "site_calibration": ("check_classes", "fit_site_calibration", "preview", "calibrate_folder",
        "save_site_calibration", "chosen_point", "validation_scores"),
    "study_report": ("build_study_html", "write_study_report"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
