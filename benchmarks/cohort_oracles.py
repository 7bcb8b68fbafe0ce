"""What the synthetic cohort lets any model learn: its information budget, measured on held-out subjects from
the cohort's ground-truth folder (which no site code reads).

- ecg_oracle: regressions from the ideal, noise-free ECG wave parameters (no recording noise, no leads lost);
- cmr_oracle: the same from the cardiac state a CMR shows (volumes, mass, wall, effusion, wall-motion defect);
  both quadratic (ridge / logistic), cross-fitted over 5 folds, scored against the TRUE disease status;
- variance_share: how much of a clip's pixel variance, after ingest's heart localisation, each part of the
  phantom explains: re-renders (noise-free) with the cardiac state alone (the heart centred, torso and coil at
  their average), then the true heart position, then the true torso and coil, each scored as R^2 against the
  ingested clip around a leave-one-out mean clip; what is left is noise;
- generator_ceiling: SSIM and EF-proxy error against the ingested clip of the mean clip, of a render from what
  the ECG shows of the state (each state variable predicted from the ideal ECG parameters), and of a render
  from the whole state: what a perfect generator could reach with the ECG's knowledge and with the CMR's;
- label_noise: per site, the share of true cases its labels miss and of non-cases they code.

    .venv/bin/cardiacfl synth --layout paper --scale 0.5 --seed 0 --out data/paper-0.5
    .venv/bin/python benchmarks/cohort_oracles.py --data data/paper-0.5 --json runs/oracles-seed0.json

The ranges checked are in RANGES (where they come from: README, "What the synthetic cohort can show").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import r2_score, roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocol.site_metrics import MetricKey  # noqa: E402
from shared_models import metrics  # noqa: E402
from shared_models.targets import DISEASES, INDICATORS  # noqa: E402
from sitedata.cmr_geometry import pick_slice_index, to_model_clip  # noqa: E402
from sitedata.cmr_ingest import read_cmr  # noqa: E402
from sitedata.manifest import read_manifest  # noqa: E402
from sitedata.site_config import load_site_config  # noqa: E402
from synthetic.cmr_phantom import CmrNuisance, render_cine  # noqa: E402
from synthetic.ground_truth import read_cohort_truth  # noqa: E402
from synthetic.latent_state import CardiacState  # noqa: E402

LOW_EF = 40.0
RANGES = {  # (low, high) of each figure the test-bed must show; None: no bound on that side
    "ecg_oracle.lvef_r2": (0.25, 0.50),
    "ecg_oracle.low_ef_auroc": (0.80, 0.93),
    "ecg_oracle.disease_auroc": (0.65, 0.85),
    "cmr_oracle.indicator_r2": (0.90, None),
    "cmr_oracle.disease_auroc_above_ecg": (0.05, None),
    "variance_share.cardiac": (0.50, None),
}
# The CMR shows the heart's anatomy and motion; these state variables are what it measures.
_CMR_FEATURES = ("lvedv", "lvesv", "lvm", "rvedv", "rvesv", "effusion_mm", "defect_burden", "defect_severity",
                 "wall_mm", "heart_rate")
# The state variables a render needs, predicted from the ECG for the ECG-visible ceiling.
_RENDERED = ("lvedv", "lvm", "contraction", "defect_width_deg", "defect_severity", "rvedv", "rvesv",
             "effusion_mm", "orientation_deg", "heart_rate")


def quadratic_regressor():
    return make_pipeline(PolynomialFeatures(2, include_bias=False), StandardScaler(),
                         RidgeCV(alphas=np.logspace(-3, 3, 13)))


def quadratic_classifier():
    return make_pipeline(PolynomialFeatures(2, include_bias=False), StandardScaler(),
                         LogisticRegression(C=0.1, max_iter=3000))


def held_out_r2(x, y, seed) -> float:
    folds = KFold(5, shuffle=True, random_state=seed)
    return float(r2_score(y, cross_val_predict(quadratic_regressor(), x, y, cv=folds)))


def held_out_auroc(x, labels, seed) -> float:
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    scores = cross_val_predict(quadratic_classifier(), x, labels, cv=folds, method="predict_proba")[:, 1]
    return float(roc_auc_score(labels, scores))


def cmr_features(state: CardiacState) -> list[float]:
    values = dataclasses.asdict(state) | {"lvesv": state.lvesv, "wall_mm": state.wall_mm,
                                          "defect_burden": state.defect_width_deg * state.defect_severity}
    return [float(values[name]) for name in _CMR_FEATURES]


def oracle(x: np.ndarray, states: list[CardiacState], seed: int, indicators: bool) -> dict:
    ef = np.array([s.lvef for s in states])
    out = {"lvef_r2": held_out_r2(x, ef, seed),
           "low_ef_auroc": held_out_auroc(x, (ef <= LOW_EF).astype(int), seed),
           "disease_auroc": {d: held_out_auroc(x, np.array([s.diseases[d] for s in states]), seed) for d in DISEASES}}
    if indicators:
        out["indicator_r2"] = {name: held_out_r2(x, np.array([s.indicators()[name] for s in states]), seed)
                               for name in INDICATORS}
    return out


def label_noise(sites) -> dict:
    out = {}
    for site in sites:
        pairs = [(s.state.diseases[d], s.recorded[d]) for s in site.subjects for d in DISEASES
                 if s.recorded[d] is not None]
        cases = [recorded for true, recorded in pairs if true]
        non_cases = [recorded for true, recorded in pairs if not true]
        out[site.site_id] = {"definition": site.label_definition,
                             "missed": 1 - float(np.mean(cases)) if cases else None,
                             "false_code": float(np.mean(non_cases)) if non_cases else None}
    return out


# --- images -----------------------------------------------------------------------------------------------------

def _model_clip(cine: np.ndarray, scanner, settings) -> np.ndarray:
    """A rendered (slices, frames, rows, cols) cine through ingest's geometry (localisation included)."""
    stack = cine[pick_slice_index(cine.shape[0], settings.slice_position)]
    return to_model_clip(stack, (scanner.spacing_mm,) * 2, settings, {}).frames


def _state_from_ecg(states, ecg_x, seed) -> list[CardiacState]:
    """Each subject's state as its ECG shows it: every rendered variable predicted, held out, from the ideal
    ECG parameters (the rest kept: sex and age are on every ECG's header)."""
    folds = KFold(5, shuffle=True, random_state=seed)
    predicted = {name: cross_val_predict(quadratic_regressor(), ecg_x, np.array([getattr(s, name) for s in states]),
                                         cv=folds) for name in _RENDERED}
    out = []
    for i, state in enumerate(states):
        values = {name: float(predicted[name][i]) for name in _RENDERED}
        values["contraction"] = float(np.clip(values["contraction"], 0.05, 0.6))
        values["defect_severity"] = float(np.clip(values["defect_severity"], 0, 1))
        values["defect_width_deg"] = float(np.clip(values["defect_width_deg"], 0, 180))
        values["effusion_mm"] = float(max(values["effusion_mm"], 0))
        for name in ("lvedv", "lvm", "rvedv"):
            values[name] = max(values[name], 30.0)
        values["rvesv"] = float(np.clip(values["rvesv"], 0.2 * values["rvedv"], 0.9 * values["rvedv"]))
        out.append(dataclasses.replace(state, **values))
    return out


def images(data: Path, sites, n_subjects: int, seed: int, ecg_x_all, states_all, index_all) -> tuple[dict, dict, int]:
    rng = np.random.default_rng(seed)
    paired = [(site, subject) for site in sites if site.scanner for subject in site.subjects]
    chosen = [paired[i] for i in sorted(rng.choice(len(paired), min(n_subjects, len(paired)), replace=False))]
    ecg_states = _state_from_ecg(states_all, ecg_x_all, seed)
    configs = {site.site_id: load_site_config(data / "site_configs" / f"{site.site_id}.toml") for site, _ in chosen}
    cmr_paths = {(site_id, row.subject_id): row.cmr_path for site_id, config in configs.items()
                 for row in read_manifest(config.manifest, config.data_root)[0]}
    real, renders = [], {"cardiac": [], "position": [], "anatomy_coil": [], "ecg_visible": []}
    for site, subject in chosen:
        settings, scanner, nuisance = configs[site.site_id].cmr, site.scanner, subject.nuisance
        real.append(read_cmr(cmr_paths[site.site_id, subject.subject_id], settings).frames)
        average = CmrNuisance()  # the heart at the centre, the average torso, no coil field
        placed = dataclasses.replace(average, centre_mm=nuisance.centre_mm)
        state = subject.state
        renders["cardiac"].append(_model_clip(render_cine(state, scanner, None, nuisance=average), scanner, settings))
        renders["position"].append(_model_clip(render_cine(state, scanner, None, nuisance=placed), scanner, settings))
        renders["anatomy_coil"].append(_model_clip(render_cine(state, scanner, None, nuisance=nuisance), scanner, settings))
        seen = ecg_states[index_all[site.site_id, subject.subject_id]]
        renders["ecg_visible"].append(_model_clip(render_cine(seen, scanner, None, nuisance=average), scanner, settings))
    real = np.stack(real)
    renders = {k: np.stack(v) for k, v in renders.items()}
    leave_one_out_mean = (real.sum(0, keepdims=True) - real) / (len(real) - 1)
    total = float(((real - leave_one_out_mean) ** 2).sum())
    explained = {k: 1 - float(((real - renders[k]) ** 2).sum()) / total for k in ("cardiac", "position", "anatomy_coil")}
    share = {"cardiac": explained["cardiac"], "position": explained["position"] - explained["cardiac"],
             "anatomy_coil": explained["anatomy_coil"] - explained["position"], "noise": 1 - explained["anatomy_coil"]}
    ceiling = {name: _scores(real, clips) for name, clips in
               (("mean_clip", leave_one_out_mean), ("ecg_visible", renders["ecg_visible"]),
                ("full_state", renders["cardiac"]))}
    return share, ceiling, len(real)


def _scores(real, clips) -> dict:
    ssim, ef_error = metrics.clip_scores(real, clips)
    return {MetricKey.SSIM.value: ssim, MetricKey.EF_PROXY_MAE.value: ef_error}


# --- report -----------------------------------------------------------------------------------------------------

def checks(result: dict) -> list[tuple[str, float, tuple, bool]]:
    rows = []

    def check(name, value, key):
        low, high = RANGES[key]
        rows.append((name, value, (low, high), (low is None or value >= low) and (high is None or value <= high)))

    ecg, cmr = result["ecg_oracle"], result["cmr_oracle"]
    check("ECG: LVEF R2", ecg["lvef_r2"], "ecg_oracle.lvef_r2")
    check(f"ECG: low EF (<= {LOW_EF:g} %) AUROC", ecg["low_ef_auroc"], "ecg_oracle.low_ef_auroc")
    for d in DISEASES:
        check(f"ECG: {d} AUROC", ecg["disease_auroc"][d], "ecg_oracle.disease_auroc")
    for name, value in cmr["indicator_r2"].items():
        check(f"CMR: {name} R2", value, "cmr_oracle.indicator_r2")
    for d in DISEASES:
        check(f"CMR - ECG: {d} AUROC", cmr["disease_auroc"][d] - ecg["disease_auroc"][d],
              "cmr_oracle.disease_auroc_above_ecg")
    check("clip variance explained by the cardiac state", result["variance_share"]["cardiac"], "variance_share.cardiac")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a cohort folder written by cardiacfl synth")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--images", type=int, default=80, help="paired subjects re-rendered for the image figures")
    parser.add_argument("--seed", type=int, default=0, help="folds and the subjects re-rendered")
    args = parser.parse_args()
    start = time.perf_counter()
    sites = read_cohort_truth(args.data)
    subjects = [(site.site_id, s) for site in sites for s in site.subjects]
    states = [s.state for _, s in subjects]
    index = {(site_id, s.subject_id): i for i, (site_id, s) in enumerate(subjects)}
    ecg_x = np.stack([s.ecg.features() for _, s in subjects])
    cmr_x = np.array([cmr_features(state) for state in states])
    result = {"data": str(args.data), "subjects": len(states),
              "ecg_oracle": oracle(ecg_x, states, args.seed, indicators=False),
              "cmr_oracle": oracle(cmr_x, states, args.seed, indicators=True),
              "label_noise": label_noise(sites)}
    share, ceiling, n_images = images(args.data, sites, args.images, args.seed, ecg_x, states, index)
    result.update(variance_share=share, generator_ceiling=ceiling, image_subjects=n_images)

    print(f"{args.data}: {len(states)} subjects, {n_images} clips re-rendered ({time.perf_counter() - start:.0f} s)")
    failed = 0
    for name, value, (low, high), ok in checks(result):
        bound = f"{'' if low is None else f'{low:g}'}..{'' if high is None else f'{high:g}'}"
        print(f"  {name:48s} {value:7.3f}  [{bound:>9s}]  {'ok' if ok else 'OUT OF RANGE'}")
        failed += not ok
    print("  clip variance: " + ", ".join(f"{k} {v:.2f}" for k, v in share.items()))
    print("  generator ceiling (SSIM / EF-proxy MAE): " + ", ".join(
        f"{k} {v[MetricKey.SSIM]:.3f} / {v[MetricKey.EF_PROXY_MAE]:.1f}" for k, v in ceiling.items()))
    for site_id, noise in result["label_noise"].items():
        if noise["missed"] is not None:
            print(f"  labels at {site_id} ({noise['definition']}): {noise['missed']:.0%} of cases missed, "
                  f"{noise['false_code']:.1%} of non-cases coded")
    result["out_of_range"] = failed
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
