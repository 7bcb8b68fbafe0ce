"""The synthetic cohort: deterministic, labels tied to the latent state, CMR more informative than ECG."""

import csv
import filecmp

import numpy as np
import pytest

from sitedata.site_config import load_site_config
from synthetic.cmr_phantom import Scanner, render_cine
from synthetic.cohort import generate_cohort
from synthetic.ecg_wave_model import synthesize_ecg
from synthetic.latent_state import Prevalence, sample_state

PREVALENCE = Prevalence(cad=0.3, cardiomyopathy=0.25, pericarditis=0.15, pulmonary_hypertension=0.15)


def _states(n, seed=0):
    rng = np.random.default_rng(seed)
    return [sample_state(rng, PREVALENCE, 60) for _ in range(n)]


def test_same_seed_same_cohort_other_seed_differs(tmp_path, tiny_cohort_template):
    generate_cohort(tmp_path / "again", n_sites=3, subjects=8, seed=1, workers=1)
    for site in ("hospital-a", "hospital-b", "hospital-c"):
        assert filecmp.cmp(tiny_cohort_template / site / "manifest.csv", tmp_path / "again" / site / "manifest.csv", shallow=False)
        truth = f"ground_truth/{site}.csv"
        assert filecmp.cmp(tiny_cohort_template / truth, tmp_path / "again" / truth, shallow=False)
    generate_cohort(tmp_path / "other", n_sites=1, subjects=8, seed=2, workers=1)
    assert (tmp_path / "other" / "hospital-a" / "manifest.csv").read_text() != (tiny_cohort_template / "hospital-a" / "manifest.csv").read_text()


def test_sites_have_their_formats_and_configs(tiny_cohort_template):
    for site, kind in (("hospital-a", "dicom"), ("hospital-b", "nifti"), ("hospital-c", None)):
        config = load_site_config(tiny_cohort_template / "site_configs" / f"{site}.toml")
        with config.manifest.open() as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == 8
        paths = [r["cmr_path"] for r in rows]
        if kind == "dicom":
            assert all((config.data_root / p / "IM_01_000.dcm").is_file() for p in paths)
        elif kind == "nifti":
            assert all(p.endswith(".nii.gz") and (config.data_root / p).is_file() for p in paths)
        else:
            assert paths == [""] * 8 and config.modalities == ("ecg",)
            assert all(r["LVEF"] == "" for r in rows)  # no CMR, no indicators
    header = next((tiny_cohort_template / "hospital-b").rglob("*.hea")).read_text().splitlines()[0]
    assert header.split()[2] == "1000"  # one site records at 1000 Hz


def test_indicators_are_consistent_and_diseases_follow_the_state():
    states = _states(3000)
    ef = np.array([s.lvef for s in states])
    for s in states[:50]:
        assert s.lvsv == pytest.approx(s.lvedv - s.lvesv) and s.lvef == pytest.approx(100 * s.lvsv / s.lvedv)
    label = lambda name: np.array([s.diseases[name] for s in states], bool)  # noqa: E731
    assert ef[label("heart_failure")].mean() < ef[~label("heart_failure")].mean() - 15
    lvedv = np.array([s.lvedv for s in states])
    lvm = np.array([s.lvm for s in states])
    cm = label("cardiomyopathy")
    assert lvedv[cm].mean() > 1.15 * lvedv[~cm].mean() or lvm[cm].mean() > 1.3 * lvm[~cm].mean()
    rv_ratio = np.array([s.rvedv / s.lvedv for s in states])
    assert rv_ratio[label("pulmonary_hypertension")].mean() > 1.3 * rv_ratio[~label("pulmonary_hypertension")].mean()
    effusion = np.array([s.effusion_mm for s in states])
    assert (effusion[label("pericarditis")] > 0).mean() > 0.85 and (effusion[~label("pericarditis")] > 0).mean() < 0.05
    defect = np.array([s.defect_width_deg > 0 for s in states])
    assert defect[label("CAD")].mean() > 0.75 and defect[~label("CAD")].mean() < 0.05


def _blood_pool_area(frame, threshold):
    centre = np.array(frame.shape) // 2
    from scipy import ndimage

    labels, _ = ndimage.label(frame > threshold)
    # the LV is the bright component nearest the image centre
    best = min(range(1, labels.max() + 1), key=lambda k: np.linalg.norm(np.argwhere(labels == k).mean(0) - centre))
    return (labels == best).sum()


def test_cmr_determines_ejection_fraction_better_than_ecg_voltage():
    """The paper's premise in the data: CMR shows the indicators directly, the ECG only indirectly."""
    rng = np.random.default_rng(11)
    states = [sample_state(rng, PREVALENCE, 60) for _ in range(40)]
    scanner = Scanner(matrix=96, spacing_mm=2.0, frames=20, slices=1, noise=0.01, bias=0.0)
    area_ef, ecg_feature = [], []
    for state in states:
        cine = render_cine(state, scanner, rng, centre_mm=(0.0, 0.0))[0]  # the LV centred, as ingest crops it
        ed = _blood_pool_area(cine[0], 0.8 * scanner.intensity_scale)
        es = _blood_pool_area(cine[7], 0.8 * scanner.intensity_scale)  # 35 % of the cycle: end-systole
        area_ef.append(1 - es / ed)
        ecg = synthesize_ecg(state, 500, 10, rng)
        ecg_feature.append(np.ptp(ecg, axis=1).mean())
    ef = np.array([s.lvef for s in states])
    r_cmr = np.corrcoef(area_ef, ef)[0, 1]
    r_ecg = abs(np.corrcoef(ecg_feature, ef)[0, 1])
    assert r_cmr > 0.9
    assert r_ecg < r_cmr - 0.3


def test_ecg_voltage_tracks_lv_mass_and_effusion_lowers_it():
    rng = np.random.default_rng(5)
    states = [sample_state(rng, PREVALENCE, 60) for _ in range(300)]
    qrs = np.array([np.ptp(synthesize_ecg(s, 500, 10, rng)[6:], axis=1).mean() for s in states])
    lvm = np.array([s.lvm for s in states])
    effusion = np.array([s.effusion_mm > 0 for s in states])
    assert 0.3 < np.corrcoef(lvm[~effusion], qrs[~effusion])[0, 1] < 0.95  # informative, not a copy
    assert qrs[effusion].mean() < qrs[~effusion].mean()


def test_limb_leads_obey_einthoven_and_goldberger():
    state = _states(1)[0]
    ecg = synthesize_ecg(state, 500, 10, np.random.default_rng(0))
    from synthetic.ecg_wave_model import EcgNoise

    clean = synthesize_ecg(state, 500, 10, np.random.default_rng(0), EcgNoise(emg_mv=0, wander_mv=0, mains_mv=0))
    lead_i, lead_ii, lead_iii, avr, avl, avf = clean[:6]
    assert np.allclose(lead_iii, lead_ii - lead_i) and np.allclose(avr + avl + avf, 0, atol=1e-9)
    assert ecg.shape == (12, 5000)


@pytest.mark.slow
def test_default_demo_cohort_generates_and_every_site_checks_clean(tmp_path):
    from sitedata.site_data import prepare_site

    configs = generate_cohort(tmp_path, n_sites=3, subjects=150, seed=0)
    for path in configs:
        site = prepare_site(load_site_config(path))
        assert site.report.rejected == [] and len(site.subjects) == 150


def test_roles_draw_from_their_own_seed_namespaces(tmp_path):
    """No choice of seeds makes the lab's panel or public pairs a copy of a site's data (SEED=92 and 99 once did)."""
    from synthetic.ground_truth import read_cohort_truth

    signatures = {}
    for role in ("sites", "public", "panel"):
        for seed in (92, 99):
            generate_cohort(tmp_path / f"{role}-{seed}", n_sites=1, subjects=6, seed=seed, workers=1, role=role)
            subjects = read_cohort_truth(tmp_path / f"{role}-{seed}")[0].subjects
            signatures[role, seed] = {(round(s.state.lvedv, 9), round(s.state.age, 9)) for s in subjects}
    for a in signatures:
        for b in signatures:
            if a != b:
                assert not signatures[a] & signatures[b], (a, b)
    with pytest.raises(ValueError, match="role must be one of"):
        generate_cohort(tmp_path / "x", n_sites=1, subjects=1, role="hospital")


def test_the_ground_truth_sits_outside_every_data_root_and_re_renders_each_subject(tiny_cohort_template):
    from synthetic.cohort import BASE_PROFILES
    from synthetic.ground_truth import read_cohort_truth

    sites = {site.site_id: site for site in read_cohort_truth(tiny_cohort_template)}
    assert set(sites) == {"hospital-a", "hospital-b", "hospital-c"}
    for site_id in sites:
        root = load_site_config(tiny_cohort_template / "site_configs" / f"{site_id}.toml").data_root
        assert not list(root.rglob("*ground_truth*"))  # nothing of the answer key where the site's code reads
    b = sites["hospital-b"]
    assert b.scanner == BASE_PROFILES[1].scanner and sites["hospital-c"].scanner is None
    assert sites["hospital-c"].label_definition == "icd-coded" and b.label_definition == "cmr-adjudicated"
    with (tiny_cohort_template / "hospital-b" / "manifest.csv").open() as handle:
        manifest = {row["subject_id"]: row for row in csv.DictReader(handle)}
    for subject in b.subjects:
        row = manifest[subject.subject_id]
        labelled = row["LVEF"] != ""
        assert (subject.recorded["CAD"] is not None) == labelled
        if labelled:  # the manifest's indicators are the state's, its labels what the site recorded
            assert float(row["LVEF"]) == pytest.approx(subject.state.lvef, abs=0.05)
            assert int(row["CAD"]) == subject.recorded["CAD"]
        assert subject.nuisance is not None and subject.split == row["split"]
    # the state, parameters and nuisance in the file draw the same noise-free cine as the originals
    first = b.subjects[0]
    clean = render_cine(first.state, b.scanner, None, nuisance=first.nuisance)
    assert clean.shape[0] == b.scanner.slices and np.isfinite(clean).all()


def test_label_definitions_miss_and_add_cases_at_their_rates():
    from synthetic.labels import CMR_ADJUDICATED, ICD_CODED, record_labels

    rng = np.random.default_rng(0)
    for definition in (CMR_ADJUDICATED, ICD_CODED):
        recorded = np.array([[record_labels({"x": 1, "y": 0}, definition, rng)[k] for k in "xy"] for _ in range(20000)])
        assert 1 - recorded[:, 0].mean() == pytest.approx(definition.missed, abs=0.01)
        assert recorded[:, 1].mean() == pytest.approx(definition.false_code, abs=0.005)
    assert 0.10 <= ICD_CODED.missed <= 0.20  # the ECG archive's codes: 10-20 % of cases never coded


def test_ingest_and_training_never_open_the_ground_truth(tiny_cohort):
    """A real site has no answer key: the synthetic one must not leak into what a site reads or learns from."""
    import sys

    from client.client_app import SiteClient
    from protocol.codec import encode_weights
    from shared_models.cardiacnets import build_model
    from shared_models.model_arrays import numpy_state
    from sitedata.site_data import prepare_site

    opened, watching = [], [True]

    def audit(event, args):
        if watching[0] and event == "open" and args and "ground_truth" in str(args[0]):
            opened.append(str(args[0]))

    sys.addaudithook(audit)  # hooks cannot be removed: this one switches itself off
    try:
        for site in ("hospital-a", "hospital-b", "hospital-c"):
            prepare_site(load_site_config(tiny_cohort / "site_configs" / f"{site}.toml"))
        client = SiteClient(str(tiny_cohort / "site_configs" / "hospital-b.toml"), None, run_id=1)
        state = encode_weights(numpy_state(build_model("tiny")))
        config = {"study": "t", "phase": "finetune", "server_round": 1, "preset": "tiny", "plan": "finetune:1:1",
                  "local_epochs": 1, "dp": True, "max_site_examples": 1000}
        client.fit(state, config)
        client.evaluate(state, config)
    finally:
        watching[0] = False
    assert (tiny_cohort / "ground_truth" / "hospital-b.csv").is_file()  # it is there to be opened
    assert opened == []
