"""CardiacNets study dashboard (entry point and router): sign-in, study picker, then the pages.

    cardiacfl dashboard --db runs/demo-study/study.db
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `streamlit run` puts only this folder on the path

from dashboard import auth, data  # noqa: E402

st.set_page_config(page_title="CardiacNets study", page_icon=":material/ecg_heart:", layout="wide")

VIEWS = Path(__file__).parent / "views"


def main() -> None:
    if not auth.signed_in():
        # Every run goes through st.navigation, also before sign-in (the browser waits for a page list otherwise).
        st.navigation([st.Page(auth.sign_in_page, title="Sign in", icon=":material/key:")]).run()
        return
    try:
        url = data.db_url()
        data.check_schema(url)
        studies = data.studies(url)
    except data.DashboardDataError as err:
        st.info(str(err))
        return
    if studies.empty:
        st.info("The run database holds no study yet. Start one with `cardiacfl study run`.")
        return
    labels = {f"{row.name} #{row.id} ({row.status})": int(row.id) for row in studies.itertuples()}
    choice = st.sidebar.selectbox("Study", list(labels))
    st.session_state.study_id = labels[choice]
    st.session_state.db_url = url
    pages = [
        st.Page(VIEWS / "overview.py", title="Study overview", icon=":material/monitoring:", default=True, url_path="overview"),
        st.Page(VIEWS / "sites.py", title="Sites", icon=":material/local_hospital:", url_path="sites"),
        st.Page(VIEWS / "privacy.py", title="Privacy", icon=":material/lock:", url_path="privacy"),
        st.Page(VIEWS / "generations.py", title="Generations", icon=":material/ecg_heart:", url_path="generations"),
        st.Page(VIEWS / "audit.py", title="Audit", icon=":material/receipt_long:", url_path="audit"),
    ]
    if data.utility_path() is not None:  # `cardiacfl dashboard --utility runs/privacy-utility/utility.json`
        pages.append(st.Page(VIEWS / "references.py", title="References", icon=":material/balance:", url_path="references"))
    st.navigation(pages).run()


main()
