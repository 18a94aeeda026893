"""The Monitor page's plotly charts from the monitor's windows: volume, positive rate with its band, out-of-domain
rate, PSI with its limits, expected against realised accuracy; alert markers on each.

Apart from :mod:`monitoring_view` because plotly is imported only here (Diagnose imports that module, and the
reading-room install has no plotly).
"""
from __future__ import annotations

from typing import Any, Sequence

from xraycore.metrics import drift


def _column(windows: Sequence[dict[str, Any]], key: str) -> list[Any]:
    return [window[key] for window in windows]


def _alert_markers(figure: Any, windows: Sequence[dict[str, Any]], key: str) -> None:
    import plotly.graph_objects as go

    flagged = [w for w in windows if w["alerts"] and w[key] is not None]
    if flagged:
        figure.add_trace(go.Scatter(x=_column(flagged, "start"), y=_column(flagged, key), mode="markers", name="alert",
                                    marker={"symbol": "x", "size": 13, "color": "crimson"},
                                    hovertext=[" ".join(w["alerts"]) for w in flagged]))


def charts(windows: Sequence[dict[str, Any]]) -> list[tuple[str, Any]]:
    """(title, figure) per chart, oldest window first."""
    import plotly.graph_objects as go

    starts = _column(windows, "start")
    layout = {"height": 260, "margin": {"l": 40, "r": 10, "t": 30, "b": 30},
              "legend": {"orientation": "h", "y": 1.15}, "xaxis": _time_axis(windows)}
    share_axis = {"range": [0, 1.02], "tickformat": ".0%"}
    volume = go.Figure(go.Bar(x=starts, y=_column(windows, "n"), name="films", width=_bar_widths(windows),
                              offset=0), layout=layout)
    _alert_markers(volume, windows, "n")
    bands = [w["positive_rate_ci95"] or [None, None] for w in windows]
    rate = go.Figure(layout=layout)
    rate.add_trace(go.Scatter(x=starts, y=[b[1] for b in bands], mode="lines", line={"width": 0}, showlegend=False))
    rate.add_trace(go.Scatter(x=starts, y=[b[0] for b in bands], mode="lines", line={"width": 0}, fill="tonexty",
                              name="95% Wilson interval"))
    rate.add_trace(go.Scatter(x=starts, y=_column(windows, "positive_rate"), mode="lines+markers", name="positive rate"))
    rate.update_yaxes(**share_axis)
    _alert_markers(rate, windows, "positive_rate")
    ood = go.Figure(go.Scatter(x=starts, y=_column(windows, "ood_rate"), mode="lines+markers", name="out of domain"),
                    layout=layout)
    ood.update_yaxes(**share_axis)
    _alert_markers(ood, windows, "ood_rate")
    psi = go.Figure(go.Scatter(x=starts, y=_column(windows, "psi"), mode="lines+markers", name="PSI"), layout=layout)
    psi.add_hline(y=drift.PSI_WARN, line_dash="dot", annotation_text="warn")
    psi.add_hline(y=drift.PSI_ALERT, line_dash="dash", line_color="crimson", annotation_text="alert")
    _alert_markers(psi, windows, "psi")
    accuracy = go.Figure(layout=layout)
    accuracy.add_trace(go.Scatter(x=starts, y=_column(windows, "expected_accuracy"), mode="lines+markers",
                                  name="expected (CBPE)"))
    accuracy.add_trace(go.Scatter(x=starts, y=_column(windows, "realised_accuracy"), mode="lines+markers",
                                  name="realised (reads)"))
    _alert_markers(accuracy, windows, "expected_accuracy")
    return [("Volume", volume), ("Positive rate", rate), ("Out-of-domain rate", ood), ("PSI against the reference", psi),
            ("Expected and realised accuracy", accuracy)]


def _time_axis(windows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Dates on the x axis; a lone window shown whole with a day either side (plotly would zoom to microseconds)."""
    import datetime as dt

    axis: dict[str, Any] = {"type": "date", "tickformat": "%Y-%m-%d\n%H:%M"}
    if len(windows) == 1:
        start, end = (dt.datetime.fromisoformat(str(windows[0][key])) for key in ("start", "end"))
        axis["range"] = [start - dt.timedelta(days=1), end + dt.timedelta(days=1)]
    return axis


def _bar_widths(windows: Sequence[dict[str, Any]]) -> list[float]:
    """Each window's bar as wide as the window (milliseconds on a date axis; plotly's default is a sliver)."""
    import datetime as dt

    widths = []
    for window in windows:
        start, end = (dt.datetime.fromisoformat(str(window[key])) for key in ("start", "end"))
        widths.append(max((end - start).total_seconds(), 1.0) * 1000 * 0.9)
    return widths
