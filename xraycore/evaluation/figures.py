"""Plotly figures from plain arrays, shared by the Streamlit pages and the HTML report.

Every builder takes numbers that :mod:`xraycore.metrics` (or :mod:`xraycore.evaluation.comparison`) already
computed and only draws them, so the app and the report can never disagree about a value.
Nothing here reads files.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

CHANCE_STYLE = {"dash": "dash", "color": "grey", "width": 1}
POINT_STYLE = {"symbol": "x", "size": 13, "color": "black", "line": {"width": 2}}
UNIT_AXIS = {"range": [-0.02, 1.02], "constrain": "domain"}
RATE_TITLES = {"precision": "Precision", "recall": "Recall (sensitivity)", "specificity": "Specificity"}


def _layout(figure: go.Figure, title: str, x_title: str, y_title: str, **extra: Any) -> go.Figure:
    figure.update_layout(
        title=title or None,
        xaxis_title=x_title,
        yaxis_title=y_title,
        template="plotly_white",
        margin={"l": 60, "r": 20, "t": 50 if title else 30, "b": 50},
        legend={"orientation": "h", "yanchor": "top", "y": -0.18},
        **extra,
    )
    return figure


def confusion_matrix_figure(cm: np.ndarray, class_names: list[str], title: str = "") -> go.Figure:
    """Heatmap with rows = true class, columns = call; each cell shows its count and row share.

    Colour follows the row share, so a rare class's errors are as visible as a common class's.
    """
    counts = np.asarray(cm, dtype=np.int64)
    row_totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = np.where(row_totals > 0, counts / np.maximum(row_totals, 1), 0.0)
    text = [[f"{count}<br>({share:.0%})" for count, share in zip(row, share_row)]
            for row, share_row in zip(counts, shares)]
    names = [str(name) for name in class_names]
    figure = go.Figure(go.Heatmap(
        z=shares, x=names, y=names, text=text, texttemplate="%{text}", colorscale="Blues",
        zmin=0.0, zmax=1.0, showscale=False,
        hovertemplate="true %{y}<br>called %{x}<br>%{text}<extra></extra>",
    ))
    _layout(figure, title, "Predicted", "True")
    figure.update_yaxes(autorange="reversed")
    figure.update_xaxes(side="bottom")
    return figure


def _marked_point(point: tuple[float, float], name: str) -> go.Scatter:
    return go.Scatter(x=[point[0]], y=[point[1]], mode="markers", name=name, marker=POINT_STYLE,
                      hovertemplate="%{x:.3f}, %{y:.3f}<extra>" + name + "</extra>")


def _score(value: float | None) -> str:
    """A curve's summary for its legend; None (one class only: undefined, see metrics) reads n/a."""
    return "n/a" if value is None else f"{value:.3f}"


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray, float | None]],
               point: tuple[float, float] | None = None) -> go.Figure:
    """ROC curves overlaid (label -> (fpr, tpr, auc)), the chance diagonal, optionally the
    operating point as (fpr, tpr)."""
    figure = go.Figure()
    for label, (fpr, tpr, auc) in curves.items():
        figure.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=f"{label} (AUC {_score(auc)})"))
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line=CHANCE_STYLE,
                                hoverinfo="skip"))
    if point is not None:
        figure.add_trace(_marked_point(point, "operating point"))
    return _layout(figure, "ROC curve", "False positive rate (1 - specificity)",
                   "True positive rate (sensitivity)", xaxis=UNIT_AXIS, yaxis=UNIT_AXIS)


def pr_figure(curves: dict[str, tuple[np.ndarray, np.ndarray, float | None]],
              point: tuple[float, float] | None = None, prevalence: float | None = None) -> go.Figure:
    """Precision-recall curves overlaid (label -> (recall, precision, AP)); the prevalence line is
    what a random classifier achieves; ``point`` is (recall, precision)."""
    figure = go.Figure()
    for label, (recall, precision, ap) in curves.items():
        figure.add_trace(go.Scatter(x=recall, y=precision, mode="lines", name=f"{label} (AP {_score(ap)})",
                                    line={"shape": "hv"}))
    if prevalence is not None:
        figure.add_trace(go.Scatter(x=[0, 1], y=[prevalence, prevalence], mode="lines",
                                    name=f"chance (prevalence {prevalence:.2f})", line=CHANCE_STYLE,
                                    hoverinfo="skip"))
    if point is not None:
        figure.add_trace(_marked_point(point, "operating point"))
    return _layout(figure, "Precision-recall curve", "Recall (sensitivity)", "Precision",
                   xaxis=UNIT_AXIS, yaxis=UNIT_AXIS)


def reliability_figure(bins: dict[str, np.ndarray], ece: float, title: str = "") -> go.Figure:
    """Observed frequency per confidence bin (bars, labelled with their image counts) against the
    diagonal of perfect calibration. Empty bins are left blank."""
    edges = np.asarray(bins["edges"], dtype=float)
    counts = np.asarray(bins["count"], dtype=np.int64)
    observed = np.asarray(bins["observed_frequency"], dtype=float)
    predicted = np.asarray(bins["mean_predicted"], dtype=float)
    centres = (edges[:-1] + edges[1:]) / 2
    figure = go.Figure()
    figure.add_trace(go.Bar(
        x=centres, y=np.where(counts > 0, observed, np.nan), width=np.diff(edges) * 0.95,
        name="observed frequency", text=[f"n={count}" if count else "" for count in counts],
        textposition="outside", customdata=np.stack([predicted, counts], axis=1),
        hovertemplate="mean predicted %{customdata[0]:.3f}<br>observed %{y:.3f}<br>"
                      "%{customdata[1]} images<extra></extra>",
    ))
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                                line=CHANCE_STYLE, hoverinfo="skip"))
    heading = f"{title} (ECE {ece:.3f})" if title else f"Reliability (ECE {ece:.3f})"
    return _layout(figure, heading, "Predicted probability", "Observed frequency",
                   xaxis={"range": [0, 1]}, yaxis={"range": [0, 1.1]})


def threshold_figure(sweep: dict[str, np.ndarray], threshold: float, beta: float) -> go.Figure:
    """Precision, recall, specificity and F-beta against the threshold (from
    ``metrics.threshold_sweep``), with a vertical line at the chosen threshold."""
    figure = go.Figure()
    x = np.asarray(sweep["threshold"], dtype=float)
    for key, name in {**RATE_TITLES, "fbeta": f"F{beta:g}"}.items():
        figure.add_trace(go.Scatter(x=x, y=sweep[key], mode="lines", name=name, line={"shape": "hv"}))
    figure.add_vline(x=threshold, line={"dash": "dot", "color": "black"},
                     annotation_text=f"threshold {threshold:.3f}", annotation_position="top")
    return _layout(figure, "Metrics by threshold", "Threshold", "Value",
                   xaxis={"range": [0, 1]}, yaxis=UNIT_AXIS, hovermode="x unified")


def training_curves_figure(histories: dict[str, list[dict]], metric: str) -> go.Figure:
    """One line per run (label -> metrics.jsonl rows) of ``metric`` by epoch; runs that never
    logged the metric are left out. The best epoch (``best`` flag) of each run is marked."""
    figure = go.Figure()
    epochs_seen: list[float] = []
    values_seen: list[float] = []
    for label, rows in histories.items():
        logged = [row for row in rows if isinstance(row.get(metric), (int, float))]
        if not logged:
            continue
        epochs = [row.get("epoch", index + 1) for index, row in enumerate(logged)]
        values = [row[metric] for row in logged]
        epochs_seen += epochs
        values_seen += values
        marker_sizes = [8 if row.get("best") else 5 for row in logged]
        figure.add_trace(go.Scatter(x=epochs, y=values, mode="lines+markers", name=label,
                                    marker={"size": marker_sizes}))
    xaxis: dict[str, Any] = {}
    if _few_epochs(histories) and epochs_seen:
        xaxis = {"dtick": 1, "range": [min(epochs_seen) - 0.5, max(epochs_seen) + 0.5]}
    return _layout(figure, metric, "Epoch", metric, xaxis=xaxis, yaxis=curve_axis_range(metric, values_seen))


def curve_axis_range(metric: str, values: list[float]) -> dict[str, Any]:
    """A y axis that means something even for one point (plotly would span value ± 0.5 and show a loss
    from -0.5 or an AUROC up to 1.5): shares on [0, 1], losses and other non-negative numbers from 0."""
    finite = [float(value) for value in values if np.isfinite(value)]
    if any(part in metric for part in BOUNDED_METRICS):
        return {"range": [0.0, 1.02]}
    if finite and min(finite) >= 0:
        return {"range": [0.0, max(finite) * 1.1 or 1.0]}
    return {}


BOUNDED_METRICS = ("auroc", "accuracy", "f1", "precision", "recall", "specificity")


def _few_epochs(histories: dict[str, list[dict]]) -> bool:
    return max((len(rows) for rows in histories.values()), default=0) <= 20


def metric_bars_figure(rows: list[dict], metrics: list[str]) -> go.Figure:
    """Grouped bars: one bar group per metric, one bar per row (``row["label"]``). Error bars come
    from ``<metric>_low``/``<metric>_high`` when a row has them; missing values leave a gap."""
    figure = go.Figure()
    for row in rows:
        values = [_number(row.get(metric)) for metric in metrics]
        has_interval = any(_number(row.get(f"{metric}_low")) is not None for metric in metrics)
        error = None
        if has_interval:
            above = [_gap(row.get(f"{metric}_high"), value) for metric, value in zip(metrics, values)]
            below = [_gap(value, row.get(f"{metric}_low")) for metric, value in zip(metrics, values)]
            error = {"type": "data", "symmetric": False, "array": above, "arrayminus": below}
        figure.add_trace(go.Bar(x=metrics, y=values, name=str(row.get("label", "")), error_y=error,
                                hovertemplate="%{x}: %{y:.3f}<extra>%{fullData.name}</extra>"))
    return _layout(figure, "", "", "Value", barmode="group", yaxis={"range": [0, 1.05]})


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
        return float(value)
    return None


def _gap(upper: Any, lower: Any) -> float | None:
    upper, lower = _number(upper), _number(lower)
    return None if upper is None or lower is None else max(0.0, upper - lower)
