"""Audit: the app the study runs (its FAB hash, which every site must have approved), every round with
participants, declined, failed and rejected replies and sites that refused the app (and why), flags such as a site
whose lifetime ε went down, model hash and checkpoint; CSV export."""

import pandas as pd
import streamlit as st

from dashboard import data

url, study_id = st.session_state.db_url, st.session_state.study_id
st.title("Audit")
st.caption("Audit rounds: participants, declined and failed sites, the global model's hash and checkpoint per round.")
rounds = data.rounds(url, study_id)
if rounds.empty:
    st.info("No rounds recorded yet.")
    st.stop()
columns = ["phase", "round", "started", "seconds", "outcome", "trained", "declined", "dropped", "failed", "rejected",
           "refused", "flags", "model_hash", "checkpoint"]
table = rounds.reindex(columns=columns, fill_value="")
study = data.studies(url).set_index("id").loc[study_id]
if study.get("app_hash"):
    st.markdown(f"App run by this study: `{study['app_hash']}` (a site runs it only once its operator approved this hash)")
for row in table[table["refused"] != ""].itertuples():
    st.error(f"{row.phase} round {row.round}: refused the lab's app: {row.refused}")
for row in table[table["flags"] != ""].itertuples():
    st.warning(f"{row.phase} round {row.round}: {row.flags}")
for row in table[table["rejected"] != ""].itertuples():
    st.error(f"{row.phase} round {row.round}: replies dropped: {row.rejected}")
for resume in study["resumes"]:
    st.info(f"Resumed at {pd.to_datetime(resume['at'], unit='s'):%Y-%m-%d %H:%M:%S} UTC after the study {resume['after']}: "
            f"{resume['reason']}")
st.dataframe(table, hide_index=True, use_container_width=True)
st.download_button("Download CSV", table.to_csv(index=False).encode(), file_name=f"study-{study_id}-rounds.csv", mime="text/csv")
