"""Which threshold answers: operating points, site calibration fits, releases, triage.

    fit_bootstrap     Confidence intervals for a site calibration that can show how uncertain a small sample
                      is
    operating_points  Named operating points of a model directory: which temperature and threshold make the
                      call
    releases          Which models readers may answer with: the bundled default, plus the models an admin has
                      released for reading
    site_profiles     Site profiles: a model adapted to one hospital, stored as what changed, and answering as
                      an operating point
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
    "releases": ("bundled_model_dir", "releases_file", "is_bundled", "weights_digest", "is_released",
        "may_preview", "offered", "require_released", "release", "withdraw", "listing", "main"),
    "site_profiles": ("check_profile_name", "profile_dir", "is_profile_point", "load_profile", "network_key",
        "load_delta", "deltas_for", "graph_overrides", "with_initializers", "missing_graph_names",
        "write_profile", "remove_stale_temporaries", "profile_refusal"),
    "triage": ("not_assessed_reason", "not_assessed_text", "group", "triage_score", "triage_key", "flag",
        "call_text", "probability_text"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
