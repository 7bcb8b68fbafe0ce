"""Privacy spent: cumulative ε per site over rounds against each site's budget, δ, σ, clipping norm, and
which sites are near or out of budget."""

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import data

url, study_id = st.session_state.db_url, st.session_state.study_id
st.title("Privacy")
fits = data.site_metrics(url, study_id, "fit", ("target_epsilon", "delta", "noise_multiplier", "max_grad_norm", "declined"))
fits = fits.dropna(subset=["epsilon"])
if fits.empty:
    st.info("No site has reported privacy spending yet (DP off, or no round finished).")
    st.stop()
fits["step"] = fits.groupby("site").cumcount() + 1
lines = alt.Chart(fits).mark_line(point=True).encode(
    x=alt.X("step:Q", title="round the site took part in"), y=alt.Y("epsilon:Q", title="ε spent (cumulative)"),
    color="site:N", tooltip=["site", "phase", "round", "epsilon"])
budgets = fits.groupby("site", as_index=False)["target_epsilon"].last()
rules = alt.Chart(budgets).mark_rule(strokeDash=[6, 4]).encode(y="target_epsilon:Q", color="site:N")
st.altair_chart((lines + rules).properties(height=340), use_container_width=True)
st.caption("Dashed lines: each site's lifetime budget. ε is cumulative over every round, phase and restart of a site.")

latest = fits.sort_values("time").groupby("site").tail(1)
table = pd.DataFrame({
    "site": latest["site"], "ε spent": latest["epsilon"].round(3), "ε budget": latest["target_epsilon"],
    "δ": latest["delta"], "noise multiplier σ": latest["noise_multiplier"].round(3), "clipping norm": latest["max_grad_norm"],
})
table["share used"] = (table["ε spent"] / table["ε budget"]).round(3)
table["status"] = table["share used"].map(lambda u: "out of budget" if u >= 0.999 else ("near budget" if u >= 0.9 else "ok"))
st.dataframe(table, hide_index=True, use_container_width=True)
for row in table.itertuples():
    if row.status != "ok":
        st.warning(f"{row.site}: {row.status} ({row._2:.2f} of {row._3:g})")
