"""Per-site metric curves (one metric, sites overlaid), samples contributed, declined rounds, and the
cross-site evaluation matrix: the final global model on every site, each site's own model on its own data."""

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import data
from protocol.site_metrics import MetricKey as K
from protocol.site_metrics import label, local_key

url, study_id = st.session_state.db_url, st.session_state.study_id
st.title("Sites")
st.dataframe(data.site_health(url, study_id), hide_index=True, use_container_width=True)
names = data.metric_names(url, study_id, "evaluate")
if not names:
    st.info("No site has evaluated a round yet.")
    st.stop()
default = names.index(K.LOSS) if K.LOSS in names else 0
metric = st.selectbox("Validation metric", names, index=default, format_func=label)
frame = data.site_metrics(url, study_id, "evaluate", (metric,)).dropna(subset=[metric])
frame["label"] = frame["phase"] + " " + frame["round"].astype(str)
frame["step"] = frame.groupby("site").cumcount() + 1
st.altair_chart(alt.Chart(frame).mark_line(point=True).encode(
    x=alt.X("step:Q", title="round (all phases)", axis=alt.Axis(format="d", tickMinStep=1)), y=alt.Y(f"{metric}:Q", title=label(metric)), color="site:N",
    tooltip=["site", "label", metric]).properties(height=320), use_container_width=True)

fits = data.site_metrics(url, study_id, "fit", (K.DECLINED, K.REASON, K.STEPS, K.SECONDS))
if not fits.empty:
    st.subheader("Contribution")
    summary = fits.groupby("site").agg(samples_last_round=("examples", "last"), rounds_trained=("examples", lambda e: int((e > 0).sum())),
                                       rounds_declined=(K.DECLINED, lambda d: int((d.fillna(0) > 0).sum())),
                                       last_seen=("time", "max")).reset_index()
    st.dataframe(summary, hide_index=True, use_container_width=True)
    declined = fits[fits[K.DECLINED].fillna(0) > 0][["site", "phase", "round", K.REASON]]
    if not declined.empty:
        st.subheader("Declined rounds")
        st.dataframe(declined, hide_index=True, use_container_width=True)

st.subheader("Cross-site evaluation")
last_phase = frame["phase"].iloc[-1]
final = frame[frame["phase"] == last_phase].sort_values("round").groupby("site").tail(1)
matrix = final.assign(model="global")[["model", "site", metric]]
local = local_key(metric)
if local in names:  # each site's own fine-tuned model, scored where it lives: on that site's validation split only
    own = data.site_metrics(url, study_id, "evaluate", (local,)).dropna(subset=[local])
    own = own.sort_values("round").groupby("site").tail(1)
    matrix = pd.concat([matrix, own.assign(model=own["site"] + " (local)").rename(columns={local: metric})
                        [["model", "site", metric]]])
cross = data.site_metrics(url, study_id, "cross", (K.MODEL, metric)).dropna(subset=[metric]).rename(columns={K.MODEL: "model"})
if not cross.empty:  # simulation: one party holds every site's data, so every local model meets every site
    matrix = pd.concat([matrix[matrix["model"] == "global"], cross[["model", "site", metric]]])
st.altair_chart(alt.Chart(matrix).mark_rect().encode(
    x=alt.X("site:N", title="site whose validation data is scored"), y=alt.Y("model:N", title=None),
    color=alt.Color(f"{metric}:Q"), tooltip=["model", "site", metric]).properties(height=40 + 28 * matrix["model"].nunique()),
    use_container_width=True)
st.caption("Rows: the final global model, and each site's own model after its last fine-tuning round. A site's "
           "model never leaves it, so it is scored on that site's validation split alone (the diagonal). The full "
           "model × site matrix needs one party holding every site's data: a simulation fills it, and so does "
           "benchmarks/privacy_utility.py.")
