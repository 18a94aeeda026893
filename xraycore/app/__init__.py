"""The Streamlit side: everything that imports streamlit lives here (pages/ and app.py call it).

    auth             The app's side of access control: who is using this session, which pages they see, what
                     every page says
    catalog          What the app offers and how it keeps results: models to choose, sample images, compact
                     results
    model_cache      The model every page answers with, loaded once per server: its Predictor and its
                     provenance
    monitor_charts   The Monitor page's plotly charts from the monitor's windows: volume, positive rate with
                     its band, out-of-domain rate, PSI with its limits, expected against realised accuracy;
                     alert markers on each
    monitoring_view  What the pages show of monitoring: recording the films Diagnose and the Worklist score,
                     the admin's alert banner on Diagnose, and the Monitor page's report, each one call for a
                     thin page
    read_form        The reader's read of one scored film, on Diagnose and on the Worklist: one click for the
                     common case, agree, and a small form for the rest (the final read, what it rests on,
                     whether the heat map was on the region)
    site_view        The Site page's tables and its one long action: the reads so far in rows, the site
                     profiles and points with their cross-fitted figures before and after, and adapting with a
                     progress bar
    sweep_panel      The Train page's sweeps: launch one (a queued job, see training.sweep_jobs) and look at a
                     sweep's trials as a table, Optuna's optimisation history and its parameter importances
                     (plotly)
    train_form       The Train page's form as plain data, so the page only lays out widgets and every
                     translation is tested here

The functions and classes named below are importable from this package too; each is imported from its
module on first use, so importing the package is cheap and pulls in no torch.
"""

from __future__ import annotations

from xraycore.common.lazy import lazy_exports

_EXPORTS = {
    "auth": ("in_script_run", "PageSpec", "auth_configured", "reachable_beyond_loopback", "beyond_loopback",
        "identify", "refusal_text", "require", "navigation", "banner"),
    "catalog": ("full_install_missing", "full_install_note", "ModelChoice", "is_model_dir", "usable_runs",
        "model_choices", "default_model_dir", "chosen_model_dir", "typed_model_dir", "model_version",
        "results_version", "lead_warnings", "other_warnings", "probability_label", "colour_legend",
        "session_results"),
    "model_cache": ("load_predictor", "model_provenance", "weights_version"),
    "monitor_charts": ("charts",),
    "monitoring_view": ("recorder", "record_uploads", "report", "alert_banner"),
    "read_form": ("read_controls", "show_read_error"),
    "site_view": ("reader_rows", "kappa_rows", "profile_rows", "history_rows", "export_for_learning",
        "adapt_with_progress"),
    "sweep_panel": ("launch_sweep_form", "trials_panel"),
    "train_form": ("shown", "key", "widget_state", "setting_values", "launch_options", "from_preset",
        "initial_state", "from_run"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
