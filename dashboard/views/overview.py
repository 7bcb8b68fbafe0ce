"""Study overview: phase and round with progress, global validation curves, wall time per round, one line per site."""

import altair as alt
import streamlit as st

from dashboard import data
from protocol.site_metrics import MetricKey as K
from protocol.site_metrics import lab_key
from shared_models.training import PHASES

url, study_id = st.session_state.db_url, st.session_state.study_id


@st.fragment(run_every="5s")
def live() -> None:
    study = data.studies(url).set_index("id").loc[study_id]
    rounds = data.rounds(url, study_id)
    st.title(f"Study {study['name']}")
    done = len(rounds[rounds["seconds"].notna()]) if not rounds.empty else 0
    total = max(int(study["total_rounds"]), 1)
    st.progress(min(done / total, 1.0), text=f"{study['status']}: phase {study['phase'] or '-'}, round {study['round']} "
                                              f"({done} of {total} rounds done; phases {' → '.join(study['phases'])})")
    if study["status"] in ("failed", "interrupted"):
        st.error(f"The study {study['status']}: {study['status_reason'] or 'no reason recorded'}. "
                 "`cardiacfl study run --resume` continues it.")
    public = study["public_data"]
    if public:
        epochs = ", ".join(f"{phase} {public[f'{phase}_epochs']}" for phase in PHASES if public.get(f"{phase}_epochs"))
        st.info(f"Public data: before each phase's rounds the lab trained it on {public['description']} (epochs: "
                f"{epochs}), centrally and without DP: it holds no site's patients. Rounds `public-*` show that model "
                "on the lab's panel.")
    if study["resumes"]:
        st.caption("Resumed " + "; ".join(f"after {r['after']} ({r['reason']})" for r in study["resumes"]))
    if rounds.empty:
        st.info("No round has finished yet.")
        return
    metrics = [c for c in rounds.columns if c.startswith("global/")]
    left, right = st.columns(2)
    with left:
        st.subheader("Global validation metrics")
        st.caption("global/lab/…: the lab's own held-out reference panel; the others: means of what sites released.")
        chosen = [m for m in (f"global/{k}" for k in (K.LOSS, K.MEAN_AUROC, K.MEAN_R2, lab_key(K.MEAN_AUROC), lab_key(K.MEAN_R2),
                                                     lab_key(K.RETRIEVAL_TOP1), lab_key(K.SSIM))) if m in metrics]
        long = rounds.melt(id_vars=["step", "phase", "round"], value_vars=chosen, var_name="metric").dropna()
        st.altair_chart(alt.Chart(long).mark_line(point=True).encode(
            x=alt.X("step:Q", title="round (all phases)"), y="value:Q", color="metric:N",
            tooltip=["phase", "round", "metric", "value"]).properties(height=280), use_container_width=True)
    with right:
        st.subheader("Wall time per round")
        st.altair_chart(alt.Chart(rounds.dropna(subset=["seconds"])).mark_bar().encode(
            x=alt.X("step:Q", title="round (all phases)"), y=alt.Y("seconds:Q", title="seconds"), color="phase:N",
            tooltip=["phase", "round", "seconds"]).properties(height=280), use_container_width=True)
    st.subheader("Sites")
    health = data.site_health(url, study_id)
    if health.empty:
        st.info("No site is enrolled or has reported yet.")
        return
    st.dataframe(health, hide_index=True, use_container_width=True)
    for row in health.to_dict("records"):
        if row["state"] != "online":
            seen = row["last seen"]
            since = f" since {seen:%H:%M:%S}" if seen is not None and seen == seen else ""
            st.warning(f"{row['site']}: {row['state']}{since}; {row['rounds missed']} round(s) missed")

live()
