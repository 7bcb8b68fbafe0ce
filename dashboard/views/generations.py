"""Generations: the reference-panel ECG (12 leads) beside the CMR clip the global model generated from it,
with a round slider, the clip as an animation and as frames, and SSIM/PSNR where the real clip exists."""


import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from dashboard import data
from shared_models.cine_media import filmstrip, gif_bytes
from shared_models.targets import LEADS

url, study_id = st.session_state.db_url, st.session_state.study_id
st.title("Generations")
gens = data.generations(url, study_id)
if gens.empty:
    st.info("No generations yet: they appear after the first generator round (with a reference panel configured).")
    st.stop()
gens["label"] = gens["phase"] + " round " + gens["server_round"].astype(str)
labels = list(dict.fromkeys(gens["label"]))
label = st.select_slider("Round", options=labels, value=labels[-1]) if len(labels) > 1 else labels[0]
reference = st.selectbox("Reference subject", sorted(gens["reference"].unique()))
row = gens[(gens["label"] == label) & (gens["reference"] == reference)].iloc[0]
arrays = data.generation_arrays(url, int(row["id"]))

left, right = st.columns([2, 3])
with left:
    st.subheader("Generated CMR")
    st.image(gif_bytes(arrays["generated"], scale=3), caption="generated cine (animation)")
    if row["ssim"] == row["ssim"] and row["ssim"] is not None:
        st.metric("SSIM vs real", f"{row['ssim']:.3f}")
        st.metric("PSNR vs real", f"{row['psnr']:.1f} dB")
with right:
    st.subheader("Reference ECG")
    ecg = arrays["ecg"][:, : arrays["ecg"].shape[1] // 4]  # first 2.5 s of the 10 s window
    strips = pd.DataFrame({"sample": np.tile(np.arange(ecg.shape[1]), len(LEADS)),
                           "lead": np.repeat(LEADS, ecg.shape[1]),
                           "mV": (ecg - 3.0 * np.arange(len(LEADS))[:, None]).ravel()})  # one strip per lead
    st.altair_chart(alt.Chart(strips).mark_line(strokeWidth=0.8).encode(
        x=alt.X("sample:Q", title="sample (500 Hz)"), y=alt.Y("mV:Q", title="leads, 3 mV apart", axis=alt.Axis(labels=False)),
        color=alt.Color("lead:N", sort=list(LEADS), legend=alt.Legend(columns=2))).properties(height=460),
        use_container_width=True)
st.subheader("Frames")
clips = [arrays["generated"]] + ([arrays["real"]] if arrays["real"] is not None else [])
st.image(filmstrip(clips, every=2, scale=2), caption="generated (top)" + (" and real (bottom)" if len(clips) > 1 else ""))
