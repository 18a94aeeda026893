"""Pure metric functions over numpy arrays: classification, ranking, calibration, bootstrap, drift, regions.

    agreement       Agreement between two readers of the same films: Cohen's kappa, numpy only
    bootstrap       How sure a metric is: percentile bootstrap intervals, stratified, for any metric or the
                    standard set at once
    calibration     Whether the probabilities mean what they say: reliability bins, expected calibration
                    error, temperature
    classification  Metrics of a call: confusion counts, the rates made from them, F-beta, threshold sweeps
                    and reports
    decision        From logits to a call: the softmax and the one threshold rule, numpy only
    drift           Has the score distribution moved, and what accuracy should we expect without labels: PSI,
                    normalised Wasserstein distance and confidence-based performance estimation (CBPE), pure
                    numpy
    inputs          The conventions every metric follows, and the input checks that hold them: labels, scores,
                    probabilities
    regions         Where on a film a heat map's mass lies: the outer band and the corners, numpy only
    ranking         Threshold-free metrics of a score's ranking: ROC and precision-recall curves, AUROC and
                    AUPRC

The functions and classes named below are importable from this package too; each is imported from its
module on first use, so importing the package is cheap and pulls in no torch.
"""

from __future__ import annotations

from xraycore.common.lazy import lazy_exports

_EXPORTS = {
    "agreement": ("cohen_kappa",),
    "bootstrap": ("bootstrap_indices", "bootstrap_ci", "bootstrap_report", "report_with_ci"),
    "calibration": ("reliability_bins", "expected_calibration_error", "temperature_nll", "fit_temperature"),
    "classification": ("rates_from_counts", "confusion_counts", "confusion_matrix", "binary_counts",
        "accuracy", "precision", "recall", "specificity", "f1", "fbeta", "threshold_sweep",
        "best_fbeta_threshold", "binary_report", "predictive_values", "classification_report",
        "multiclass_report", "one_vs_rest", "mean_std"),
    "decision": ("is_positive", "softmax"),
    "drift": ("quantile_edges", "bin_shares", "psi", "wasserstein", "expected_rates"),
    "inputs": ("check_labels", "check_binary_labels", "check_scores", "check_label_pair",
        "check_probability_matrix", "has_both_classes"),
    "regions": ("band_mask", "corner_mask", "body_grey"),
    "ranking": ("roc_curve", "pr_curve", "roc_auc", "average_precision"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
