"""Which threshold answers: operating points, site calibration fits, releases, triage.

    fit_bootstrap     Confidence intervals for a site calibration that can show how uncertain a small sample
                      is
    operating_points  Named operating points of a model directory: which temperature and threshold make the
                      call
    point_history     Rolling back: which point answered before the last change of the active one, and making
                      it active again
    read_export       The reads so far as a labelled sample: class folders of the kept films that `calibrate`,
                      `evaluate` and `adapt` take (`reads export` and the Site page)
    read_stats        What the reads so far say: per class, per reader, agreement with the model, and Cohen's
                      kappa between readers who read the same films (the Site page and `reads stats`)
    releases          Which models readers may answer with: the bundled default, plus the models an admin has
                      released for reading
    site_profiles     Site profiles: a model adapted to one hospital, stored as what changed, and answering as
                      an operating point
    site_reads        The product's door to radiologists' reads: record, correct and delete a read, and the
                      "keep read films for site learning" setting; each checked (:mod:`xraycore.access`) and
                      audited here, never only on a page
    site_store        The product's store: opened where the runs live unless `$XRAY_DB_URL` names another, and
                      the site's name
    triage            Which films get a call, and the order a batch is read in: one decision for Diagnose, the
                      CLI, the PDF and the Worklist

The functions and classes named below are importable from this package too; each is imported from its
module on first use, so importing the package is cheap and pulls in no torch.
"""

from __future__ import annotations

from xraycore.common.lazy import lazy_exports

_EXPORTS = {
    "fit_bootstrap": ("wilson_interval", "widened_to_counts", "procedure_intervals"),
    "operating_points": ("names", "active_name", "shipped_name", "get", "mark_shipped", "save", "activate",
        "reset", "rename", "save_threshold", "fingerprint", "fit_site_point", "cross_fitted_rates",
        "describe_cross_fit", "sample_warning", "temperature_at_bound", "site_refusal", "fit_failure"),
    "point_history": ("previous_active", "roll_back"),
    "read_export": ("export_reads", "describe_export"),
    "read_stats": ("reads_stats",),
    "releases": ("bundled_model_dir", "releases_file", "is_bundled", "weights_digest", "is_released",
        "may_preview", "offered", "require_released", "release", "withdraw", "listing", "main"),
    "site_profiles": ("check_profile_name", "profile_dir", "is_profile_point", "load_profile", "network_key",
        "load_delta", "deltas_for", "graph_overrides", "with_initializers", "missing_graph_names",
        "write_profile", "remove_stale_temporaries", "profile_refusal"),
    "site_reads": ("film_sha256", "read_choices", "keep_films_default", "keep_films", "set_keep_films",
        "keep_films_history", "record_read", "correct_read", "delete_read"),
    "site_store": ("open_site_store", "site_name"),
    "triage": ("not_assessed_reason", "not_assessed_text", "group", "triage_score", "triage_key", "flag",
        "call_text", "probability_text"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
