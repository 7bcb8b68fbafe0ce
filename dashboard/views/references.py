"""References: this study's held-out result beside the privacy-utility benchmark's arms (centralized, federated
with and without DP, each hospital alone), so a study lead sees what pooling, DP and joining are worth."""

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import data
from protocol.site_metrics import MetricKey as K
from protocol.site_metrics import lab_key

url, study_id = st.session_state.db_url, st.session_state.study_id

st.title("This study beside the references")
path = data.utility_path()
references = data.utility_rows(str(path))
st.caption(f"References: `{path.name}` from benchmarks/privacy_utility.py (the paper-shaped federation, the same "
           "fine-tuning budget in every arm, scored on held-out test splits). The study's own figure is on the "
           "lab's reference panel: another held-out set, so compare levels, not decimals.")

rounds = data.rounds(url, study_id)
column = f"global/{lab_key(K.MEAN_AUROC)}"
study_auroc = None
if not rounds.empty and column in rounds:
    finetune = rounds[rounds["phase"] == "finetune"].dropna(subset=[column])
    if not finetune.empty:
        study_auroc = float(finetune[column].iloc[-1])
if study_auroc is None:
    st.info("This study has no held-out mean AUROC yet (it needs a fine-tune round and a reference panel).")
else:
    st.metric("This study: mean AUROC on the lab's panel, last fine-tune round", f"{study_auroc:.3f}")

pooled = references[references["eval"] == "pooled"].copy()
pooled["arm"] = pooled.apply(lambda r: r["setting"] + (f" ε={r['epsilon']:g}" if pd.notna(r["epsilon"]) else ""), axis=1)
pooled["low"] = pooled["auroc_ci"].map(lambda ci: ci[0] if isinstance(ci, list) else None)
pooled["high"] = pooled["auroc_ci"].map(lambda ci: ci[1] if isinstance(ci, list) else None)
for encoder, rows in pooled.groupby("encoder", sort=False):
    st.subheader(f"{encoder} encoder: mean AUROC on the pooled test split, with 95 % CI")
    base = alt.Chart(rows).encode(y=alt.Y("arm:N", sort=None, title=None))
    layers = [base.mark_rule().encode(x=alt.X("low:Q", title="mean AUROC", scale=alt.Scale(domain=[0.3, 1.0])),
                                      x2="high:Q"),
              base.mark_point(filled=True, size=60).encode(x="auroc_mean:Q", tooltip=["arm", "auroc_mean", "r2_mean"])]
    if study_auroc is not None:
        layers.append(alt.Chart(pd.DataFrame({"x": [study_auroc]})).mark_rule(color="red", strokeDash=[4, 3])
                      .encode(x="x:Q"))
    st.altair_chart(alt.layer(*layers).properties(height=30 * len(rows) + 40), use_container_width=True)
st.subheader("Every arm, every test split")
st.dataframe(references.drop(columns=["auroc_ci"]), hide_index=True, use_container_width=True)
