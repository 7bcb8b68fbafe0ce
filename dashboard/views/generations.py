"""Generations: the reference-panel ECG (12 leads) beside the CMR clip the global model generated from it,
with a round slider, the clip as an animation and as frames, and SSIM/PSNR where the real clip exists."""

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import streamlit as st  # noqa: E402

from dashboard import data  # noqa: E402
from shared_models.cine_media import filmstrip, to_images  # noqa: E402
from shared_models.targets import LEADS  # noqa: E402

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

left, right = st.columns([3, 2])
with left:
    st.subheader("Reference ECG")
    ecg = arrays["ecg"]
    fig, axes = plt.subplots(6, 2, figsize=(8, 6), sharex=True)
    for i, ax in enumerate(axes.T.flat):
        ax.plot(ecg[i][: ecg.shape[1] // 4], lw=0.7, color="black")
        ax.set_ylabel(LEADS[i], rotation=0, labelpad=14, fontsize=8)
        ax.set_yticks([])
    fig.tight_layout()
    st.pyplot(fig)
    plt.close(fig)
with right:
    st.subheader("Generated CMR")
    frames = to_images(arrays["generated"], scale=3)
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=60, loop=0)
    st.image(buffer.getvalue(), caption="generated cine (animation)")
    if row["ssim"] == row["ssim"] and row["ssim"] is not None:
        st.metric("SSIM vs real", f"{row['ssim']:.3f}")
        st.metric("PSNR vs real", f"{row['psnr']:.1f} dB")
st.subheader("Frames")
clips = [arrays["generated"]] + ([arrays["real"]] if arrays["real"] is not None else [])
st.image(filmstrip(clips, every=2, scale=2), caption="generated (top)" + (" and real (bottom)" if len(clips) > 1 else ""))
