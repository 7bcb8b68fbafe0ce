"""Study overview: phase and round with progress, global validation curves, wall time per round, one line per site."""

import altair as alt
import streamlit as st

from dashboard import charts, data
from shared_models.training import PHASES

url, study_id = st.session_state.db_url, st.session_state.study_id


@st.fragment(run_every="5s")
def live() -> None:
    study = data.studies(url).set_index("id").loc[study_id]
    rounds = data.rounds(url, study_id)
    st.title(f"Study {study['name']}")
    federated = charts.federated(rounds) if not rounds.empty else rounds
    done = int(federated["seconds"].notna().sum()) if not rounds.empty else 0
    total = max(int(study["total_rounds"]), 1)  # the plan's federated rounds (public steps are not rounds)
    st.progress(min(done / total, 1.0), text=f"{study['status']}: phase {study['phase'] or '-'}, round {study['round']} "
                                              f"({min(done, total)} of {total} federated rounds done; "
                                              f"phases {' → '.join(study['phases'])})")
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
    st.subheader("Validation, round by round")
    st.caption("The sites' example-weighted means of what they released, and the lab's own held-out reference panel "
               "(lab panel); the dashed line is the public model alone, before any site took part.")
    shown = [chart for title, keys in charts.PANELS.items() if (chart := charts.panel(rounds, title, keys)) is not None]
    for row in range(0, len(shown), 3):
        for column, chart in zip(st.columns(3), shown[row:row + 3]):
            column.altair_chart(chart, use_container_width=True)
    st.subheader("Wall time per round")
    timed = rounds.dropna(subset=["seconds"])
    st.altair_chart(alt.Chart(timed).mark_bar().encode(
        x=alt.X("step:Q", title="round (all phases)", axis=alt.Axis(format="d", tickMinStep=1)),
        y=alt.Y("seconds:Q", title="seconds"), color="phase:N",
        tooltip=["phase", "round", alt.Tooltip("seconds:Q", format=".1f")]).properties(height=200), use_container_width=True)
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
