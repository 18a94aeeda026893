"""Is the model still working after go-live: scored films recorded, windows, drift, expected and realised
performance, alerts.

    figures          Per-window figures of a stream of scored films: volume, positive rate (95% Wilson
                     interval), out-of-domain and guard rates, PSI and normalised Wasserstein distance against
                     the reference, CBPE expected rates, realised rates where reads exist, and the alerts
    recording        Every scored film leaves a row in the store: what the model answered, with which model
                     and point, never a file name, patient identifier or pixels; and a store that fails says
                     so instead of dropping the row in silence
    reference        What a stream of scored films is compared with: the scores the active operating point was
                     fitted on
    reference_files  Where a model's monitoring reference comes from, and how it is kept beside the model
    report           The monitor over the store: a model's scored films since a date, cut into windows,
                     against its reference, with the reads joined for realised figures
    rules            When a window raises an alert, and the likely cause it names: out-of-domain surge, score
                     shift (new unit or protocol), or prevalence
    windows          How scored films are cut into windows: calendar weeks, calendar days (UTC), or N
                     consecutive films

The functions and classes named below are importable from this package too; each is imported from its
module on first use, so importing the package is cheap and pulls in no torch.
"""

from __future__ import annotations

from xraycore.common.lazy import lazy_exports

_EXPORTS = {
    "figures": ("ScoredColumns", "one_window", "monitor_columns", "active_alerts"),
    "recording": ("Recorded", "monitoring_store", "positive_logit", "guard_codes", "row_of", "record",
        "Recorder"),
    "reference": ("Reference", "probability_of"),
    "reference_files": ("save_reference", "load_reference"),
    "report": ("MonitorReport", "parse_since", "columns_of", "truth_by_film", "monitor"),
    "rules": ("WindowState", "mixture_psi", "state_of", "alerts", "sentence", "watch"),
    "windows": ("Window", "parse_window", "split"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
