"""The overview's validation charts: one small panel per kind of figure (loss, AUROC, R², retrieval, SSIM), each
curve under its human name, whole-number round axes, the public model's value (the lab's own data alone,
before any site took part) as a dashed reference line, and a held-out figure's bootstrap 95 % interval as a
band around its curve."""

from __future__ import annotations

import altair as alt
import pandas as pd

from protocol.site_metrics import MetricKey as K
from protocol.site_metrics import GAIN_KEYS, gain_key, interval_keys, lab_key, label

# kind -> the round columns it plots (the sites' means and the lab's held-out panel)
PANELS = {
    "Loss": (K.LOSS,),
    "AUROC": (K.MEAN_AUROC, lab_key(K.MEAN_AUROC)),
    "R²": (K.MEAN_R2, lab_key(K.MEAN_R2)),
    "Retrieval top-1": (lab_key(K.RETRIEVAL_TOP1), lab_key(K.RETRIEVAL_TOP5)),
    "SSIM": (lab_key(K.SSIM),),
    "Gain over the public model": tuple(lab_key(gain_key(k)) for keys in GAIN_KEYS.values() for k in keys),
}
REFERENCE = "public model alone"


def federated(rounds: pd.DataFrame) -> pd.DataFrame:
    """The plan's rounds, numbered 1, 2, ... through every phase (the public steps are not rounds)."""
    rounds = rounds[~rounds["phase"].str.startswith("public-")]
    return rounds.assign(step=range(1, len(rounds) + 1))


def public_reference(rounds: pd.DataFrame, column: str) -> float | None:
    """The public model's value of a lab figure: its last public-* round that has it."""
    public = rounds[rounds["phase"].str.startswith("public-")]
    values = public[column].dropna() if column in public else []
    return float(values.iloc[-1]) if len(values) else None


def panel(rounds: pd.DataFrame, title: str, keys: tuple[str, ...]) -> alt.LayerChart | None:
    """One kind's chart over the federated rounds, or None when the study has none of its figures."""
    columns = [f"global/{k}" for k in keys if f"global/{k}" in rounds]
    points = federated(rounds)
    long = points.melt(id_vars=["step", "phase", "round"], value_vars=columns, var_name="key").dropna()
    references = [{"figure": f"{label(c.removeprefix('global/'))}: {REFERENCE}", "value": v}
                  for c in columns if c.startswith(f"global/{lab_key('')}") and (v := public_reference(rounds, c)) is not None]
    if long.empty and not references:
        return None
    long["figure"] = long["key"].map(lambda c: label(c.removeprefix("global/")))
    x = alt.X("step:Q", title="federated round (all phases)", axis=alt.Axis(format="d", tickMinStep=1))
    lines = alt.Chart(long).mark_line(point=True).encode(
        x=x, y=alt.Y("value:Q", title=title),
        color=alt.Color("figure:N", legend=alt.Legend(orient="bottom", direction="vertical", title=None, labelLimit=0)),
        tooltip=["phase", "round", "figure", alt.Tooltip("value:Q", format=".3f")])
    rules = alt.Chart(pd.DataFrame(references or [{"figure": "", "value": None}])).mark_rule(strokeDash=[6, 4]).encode(
        y="value:Q", color=alt.Color("figure:N"), tooltip=["figure", alt.Tooltip("value:Q", format=".3f")])
    chart = lines + rules
    if not (bands := intervals(points, columns)).empty:
        chart += alt.Chart(bands).mark_area(opacity=0.2).encode(
            x=x, y="low:Q", y2="high:Q", color=alt.Color("figure:N"),
            tooltip=["figure", alt.Tooltip("low:Q", format=".3f"), alt.Tooltip("high:Q", format=".3f")])
    return chart.properties(title=title, height=220)


def intervals(points: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """(step, figure, low, high) of every plotted figure that has a 95 % interval."""
    bands = []
    for column in columns:
        low, high = (f"global/{k}" for k in interval_keys(column.removeprefix("global/")))
        if low in points and high in points:
            band = points[["step", low, high]].dropna().rename(columns={low: "low", high: "high"})
            bands.append(band.assign(figure=label(column.removeprefix("global/"))))
    return pd.concat(bands) if bands else pd.DataFrame()
