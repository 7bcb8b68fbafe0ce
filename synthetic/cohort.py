"""Generate the synthetic multi-site cohort: per site, subjects' ECGs and CMR studies in that site's
formats, a manifest and a site config; beside the sites, a ground-truth folder (synthetic only; real sites have
none; see `ground_truth.py`).

Default demo (3 sites): hospital-a, a tertiary centre (older, CAD-heavy case mix, DICOM cine, MIMIC-IV-ECG
layout at 500 Hz); hospital-b, a cardiomyopathy referral centre (younger, NIfTI cine at finer resolution
and more noise, PTB-XL layout at 1000 Hz); hospital-c, a community hospital with ECGs only (250 Hz,
format 212, PTB-style lower-case lead names plus Frank leads). More sites cycle these kinds with
seed-dependent case mixes. Sites differ by scanner (resolution, SNR, vendor contrast), case mix and label
definition (`labels.py`: CMR-adjudicated at the imaging hospitals, ICD-like codes at ECG-only ones).

Every cohort is written for a role (`ROLES`: the sites' private data, the lab's public pairs, the lab's held-out
panel) and each role draws from its own seed namespace, so no choice of seeds makes two roles share a subject.
Everything is deterministic for a given role and seed.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from shared_models.targets import DISEASES, INDICATORS
from synthetic.cmr_phantom import CmrNuisance, Scanner, render_cine
from synthetic.ecg_wave_model import LEAD_ORDER, EcgNoise, ecg_parameters, synthesize_ecg
from synthetic.ground_truth import truth_row, write_site_truth
from synthetic.labels import CMR_ADJUDICATED, DEFINITIONS, ICD_CODED, record_labels
from synthetic.latent_state import Prevalence, sample_state
from synthetic.writers import write_dicom_cine, write_nifti, write_wfdb

ECG_SECONDS = 10.0
UNLABELLED_FRACTION = 0.15  # paired sites: share of pairs with no labels at all (pretraining-only data)
ROLES = ("sites", "public", "panel")  # whose data a cohort is: each role its own seed namespace
_ROLE_NAMESPACE = 0x5EED00  # + the role's index: the first word of every subject's seed


@dataclass(frozen=True)
class SiteProfile:
    site_id: str
    description: str
    prevalence: Prevalence
    age_mean: float
    ecg_rate: int
    ecg_layout: str  # mimic | ptbxl | ptb
    ecg_format: str  # WFDB storage format
    mains_hz: float
    cmr_format: str | None  # dicom | nifti | None (ECG-only site)
    scanner: Scanner = field(default_factory=Scanner)
    target_epsilon: float = 8.0
    leads: tuple[str, ...] | None = None  # a reduced-lead site records only these (lower-case names); None: all
    vendor: str = "VENDOR-A"  # the DICOM Manufacturer after "SYNTHETIC "
    labels: str = CMR_ADJUDICATED.name  # how the site records diagnoses (synthetic/labels.py)


@dataclass(frozen=True)
class SiteSpec:
    """One site of a layout: its kind and how many subjects it holds."""
    profile: SiteProfile
    subjects: int


BASE_PROFILES = (
    SiteProfile("hospital-a", "tertiary cardiac centre, CAD-heavy, DICOM cine, MIMIC-IV-ECG layout 500 Hz",
                Prevalence(cad=0.30, cardiomyopathy=0.10, pericarditis=0.05, pulmonary_hypertension=0.08),
                age_mean=64, ecg_rate=500, ecg_layout="mimic", ecg_format="16", mains_hz=60, cmr_format="dicom",
                scanner=Scanner(matrix=128, spacing_mm=2.1, frames=20, intensity_scale=1500, noise=0.03, bias=0.2),
                target_epsilon=8.0),
    SiteProfile("hospital-b", "cardiomyopathy referral centre, NIfTI cine (3T), PTB-XL layout 1000 Hz",
                Prevalence(cad=0.15, cardiomyopathy=0.25, pericarditis=0.10, pulmonary_hypertension=0.12),
                age_mean=52, ecg_rate=1000, ecg_layout="ptbxl", ecg_format="16", mains_hz=50, cmr_format="nifti",
                scanner=Scanner(matrix=144, spacing_mm=1.75, frames=25, intensity_scale=900, noise=0.05, bias=0.35,
                                myocardium=0.34, tissue=1.15),
                target_epsilon=6.0, vendor="VENDOR-B"),
    SiteProfile("hospital-c", "community hospital, ECG only, 250 Hz format 212 with Frank leads",
                Prevalence(cad=0.20, cardiomyopathy=0.08, pericarditis=0.05, pulmonary_hypertension=0.06),
                age_mean=60, ecg_rate=250, ecg_layout="ptb", ecg_format="212", mains_hz=50, cmr_format=None,
                target_epsilon=10.0, labels=ICD_CODED.name),
)

# Lead names and order as each source writes them.
_LEAD_NAMES = {
    "mimic": ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"],
    "ptbxl": ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"],
    "ptb": ["i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6", "vx", "vy", "vz"],
}


def site_profiles(n_sites: int, seed: int) -> list[SiteProfile]:
    """The three base kinds first; further sites vary their case mix and age deterministically."""
    profiles = []
    rng = np.random.default_rng([seed, 7919])
    for i in range(n_sites):
        base = BASE_PROFILES[i % len(BASE_PROFILES)]
        if i < len(BASE_PROFILES):
            profiles.append(base)
            continue
        tweak = lambda p: float(np.clip(p * rng.uniform(0.6, 1.5), 0.02, 0.45))  # noqa: E731
        profiles.append(dataclasses.replace(
            base, site_id=f"hospital-{_letters(i)}",
            prevalence=Prevalence(*(tweak(v) for v in dataclasses.astuple(base.prevalence))),
            age_mean=base.age_mean + float(rng.normal(0, 5)),
        ))
    return profiles


def _letters(index: int) -> str:
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(ord("a") + rest) + name
    return name


def generate_cohort(out: Path, n_sites: int = 3, subjects: int = 150, seed: int = 0,
                    progress: Callable[[str, int, int], None] | None = None, workers: int | None = None,
                    role: str = "sites") -> list[Path]:
    """The demo layout: `n_sites` sites of `subjects` each (kinds cycle: DICOM, NIfTI, ECG-only)."""
    layout = [SiteSpec(profile, subjects) for profile in site_profiles(n_sites, seed)]
    return write_layout(out, layout, seed=seed, progress=progress, workers=workers, role=role)


def write_layout(out: Path, layout: list[SiteSpec], seed: int = 0,
                 progress: Callable[[str, int, int], None] | None = None, workers: int | None = None,
                 role: str = "sites") -> list[Path]:
    """Write every site of `layout` under `out` (one worker pool for all sites); return the site config paths."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    out = Path(out)
    workers = workers or min(4, os.cpu_count() or 1)
    namespace = _ROLE_NAMESPACE + ROLES.index(role)
    jobs = [(spec.profile, out / spec.profile.site_id, (namespace, seed), site_index, k)
            for site_index, spec in enumerate(layout) for k in range(spec.subjects)]
    rows: dict[str, list[tuple[dict, dict]]] = {spec.profile.site_id: [] for spec in layout}
    totals = {spec.profile.site_id: spec.subjects for spec in layout}

    def collect(job, row) -> None:
        site = job[0].site_id
        rows[site].append(row)
        if progress:
            progress(site, len(rows[site]), totals[site])

    if workers > 1 and len(jobs) > 8:
        with ProcessPoolExecutor(workers) as pool:
            for job, row in zip(jobs, pool.map(_generate_subject, jobs, chunksize=8)):
                collect(job, row)
    else:
        for job in jobs:
            collect(job, _generate_subject(job))
    configs = []
    for spec in layout:
        profile, site_dir = spec.profile, out / spec.profile.site_id
        _write_csv(site_dir / "manifest.csv", [r[0] for r in rows[profile.site_id]])
        write_site_truth(out, profile.site_id, [r[1] for r in rows[profile.site_id]],
                         profile.scanner if profile.cmr_format else None, profile.labels)
        config = out / "site_configs" / f"{profile.site_id}.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(render_site_config(profile, f"../{profile.site_id}"))
        configs.append(config)
    return configs


def _generate_subject(job) -> tuple[dict, dict]:
    profile, site_dir, (namespace, seed), site_index, k = job
    rng = np.random.default_rng([namespace, seed, site_index, k])
    state = sample_state(rng, profile.prevalence, profile.age_mean)
    params = ecg_parameters(state, rng)
    subject_id, ecg_rel = _ecg_location(profile, site_index, k)

    ecg = synthesize_ecg(state, profile.ecg_rate, ECG_SECONDS, rng, EcgNoise(mains_hz=profile.mains_hz), params)
    names = [n for n in _LEAD_NAMES[profile.ecg_layout] if profile.leads is None or n.lower() in profile.leads]
    by_name = {lead.lower(): signal for lead, signal in zip(LEAD_ORDER, ecg)}
    by_name.update(_frank_leads(by_name))
    signals = [by_name[n.lower()] for n in names]
    sex = "M" if state.sex else "F"
    write_wfdb(site_dir / ecg_rel, np.stack(signals), profile.ecg_rate, names, profile.ecg_format,
               [f"age: {state.age:.0f}", f"sex: {'male' if state.sex else 'female'}", "synthetic: true"])

    cmr_rel, nuisance = "", None
    if profile.cmr_format:
        nuisance = CmrNuisance.sample(rng)
        cine = render_cine(state, profile.scanner, rng, nuisance=nuisance)
        s = profile.scanner
        if profile.cmr_format == "dicom":
            cmr_rel = f"cmr/{subject_id}/cine"
            write_dicom_cine(site_dir / cmr_rel, cine, s.spacing_mm, s.slice_gap_mm, state.heart_rate, subject_id,
                             uid_seed=f"{namespace}-{seed}-{site_index}-{k}", manufacturer=f"SYNTHETIC {profile.vendor}")
        else:
            cmr_rel = f"cmr/{subject_id}_sa.nii.gz"
            write_nifti(site_dir / cmr_rel, cine, s.spacing_mm, s.slice_gap_mm)

    split = str(rng.choice(["train", "val", "test"], p=[0.7, 0.15, 0.15]))
    labelled = not (profile.cmr_format and rng.random() < UNLABELLED_FRACTION)
    recorded = record_labels(state.diseases, DEFINITIONS[profile.labels], rng) if labelled else None
    indicators = state.indicators()
    manifest = {"subject_id": subject_id, "ecg_path": ecg_rel, "cmr_path": cmr_rel, "split": split,
                "age": f"{state.age:.0f}", "sex": sex}
    for name in INDICATORS:  # indicators are read off CMR: an ECG-only site has none
        manifest[name] = f"{indicators[name]:.1f}" if labelled and profile.cmr_format else ""
    for name in DISEASES:
        manifest[name] = str(recorded[name]) if recorded else ""
    return manifest, truth_row(subject_id, split, state, params, nuisance, recorded)


def _frank_leads(leads: dict) -> dict:
    """Approximate orthogonal Frank leads from the standard ones (they are dropped on ingest anyway)."""
    return {"vx": leads["i"], "vy": leads["avf"], "vz": -0.5 * leads["v2"]}


def _ecg_location(profile: SiteProfile, site_index: int, k: int) -> tuple[str, str]:
    if profile.ecg_layout == "mimic":
        subject = f"{10000000 + site_index * 1000000 + k * 37:08d}"
        study = f"{40000000 + site_index * 1000000 + k * 53:08d}"
        return subject, f"files/p{subject[:4]}/p{subject}/s{study}/{study}"
    if profile.ecg_layout == "ptbxl":
        record = k + 1
        return f"{record:05d}", f"records{profile.ecg_rate}/{(record // 1000) * 1000:05d}/{record:05d}_hr"
    subject = f"patient{k + 1:04d}"
    return subject, f"{subject}/s{k + 1:04d}_re"


def _write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["subject_id", "ecg_path"])
        writer.writeheader()
        writer.writerows(rows)


def render_site_config(profile: SiteProfile, data_root: str) -> str:
    modalities = '["ecg", "cmr"]' if profile.cmr_format else '["ecg"]'
    return f"""# Site config for {profile.site_id}: {profile.description}.
# Paths are relative to this file. See README "Site configs" for every key.

[site]
id = "{profile.site_id}"
data_root = "{data_root}"
manifest = "manifest.csv"
modalities = {modalities}

[ecg]
sampling_rate_hz = 500   # model rate; this site records at {profile.ecg_rate} Hz
window_s = 10.0
max_windows = 1
allow_reduced_leads = {str(profile.leads is not None).lower()}

[cmr]
image_size = 64
frames = 16
pixel_spacing_mm = 2.0
slice_position = 0.5     # mid-ventricular

[privacy]
target_epsilon = {profile.target_epsilon}   # lifetime budget of this site
target_delta = 1e-5
max_grad_norm = 1.0

[training]
batch_size = 32
max_local_epochs = 5
device = "auto"
"""
