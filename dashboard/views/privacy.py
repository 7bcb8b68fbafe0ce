"""Privacy spent: cumulative ε per site over rounds against each site's budget, δ, σ, clipping norm, and
which sites are near or out of budget."""

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import data
from protocol.site_metrics import MetricKey as K

url, study_id = st.session_state.db_url, st.session_state.study_id
st.title("Privacy")
fits = data.site_metrics(url, study_id, "fit", (K.TARGET_EPSILON, K.DELTA, K.NOISE_MULTIPLIER, K.MAX_GRAD_NORM, K.DECLINED))
fits = fits.dropna(subset=[K.EPSILON])
if fits.empty:
    st.info("No site has reported privacy spending yet (DP off, or no round finished).")
    st.stop()
fits["step"] = fits.groupby("site").cumcount() + 1
lines = alt.Chart(fits).mark_line(point=True).encode(
    x=alt.X("step:Q", title="round the site took part in", axis=alt.Axis(format="d", tickMinStep=1)), y=alt.Y(f"{K.EPSILON}:Q", title="ε spent (cumulative)"),
    color="site:N", tooltip=["site", "phase", "round", K.EPSILON])
budgets = fits.groupby("site", as_index=False)[K.TARGET_EPSILON].last()
rules = alt.Chart(budgets).mark_rule(strokeDash=[6, 4]).encode(y=f"{K.TARGET_EPSILON}:Q", color="site:N")
st.altair_chart((lines + rules).properties(height=340), use_container_width=True)
st.caption("Dashed lines: each site's lifetime budget. ε is cumulative over every round, phase and restart of a site.")

latest = fits.sort_values("time").groupby("site").tail(1)
table = pd.DataFrame({
    "site": latest["site"], "ε spent": latest[K.EPSILON].round(3), "ε budget": latest[K.TARGET_EPSILON],
    "δ": latest[K.DELTA], "noise multiplier σ": latest[K.NOISE_MULTIPLIER].round(3), "clipping norm": latest[K.MAX_GRAD_NORM],
})
table["share used"] = (table["ε spent"] / table["ε budget"]).round(3)
table["status"] = table["share used"].map(lambda u: "out of budget" if u >= 0.999 else ("near budget" if u >= 0.9 else "ok"))
silent = sorted(set(data.site_health(url, study_id)["site"]) - set(table["site"]))
table = pd.concat([table, pd.DataFrame({"site": silent, "status": "no report yet"})], ignore_index=True)
st.dataframe(table, hide_index=True, use_container_width=True)
for row in table.itertuples():
    if row.status not in ("ok", "no report yet"):
        st.warning(f"{row.site}: {row.status} ({row._2:.2f} of {row._3:g})")
