"""Audit: every round with participants, declined and failed sites, model hash and checkpoint; CSV export."""

import streamlit as st

from dashboard import data

url, study_id = st.session_state.db_url, st.session_state.study_id
st.title("Audit")
st.caption("Audit rounds: participants, declined and failed sites, the global model's hash and checkpoint per round.")
rounds = data.rounds(url, study_id)
if rounds.empty:
    st.info("No rounds recorded yet.")
    st.stop()
columns = ["phase", "round", "started", "seconds", "outcome", "trained", "declined", "failed", "model_hash", "checkpoint"]
table = rounds[columns]
st.dataframe(table, hide_index=True, use_container_width=True)
st.download_button("Download CSV", table.to_csv(index=False).encode(), file_name=f"study-{study_id}-rounds.csv", mime="text/csv")
