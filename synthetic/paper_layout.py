"""A federation shaped like the data CardiacNets was trained on, scaled for a small machine:

- `biobank`: a large population cohort with ECG and CMR (UK Biobank: 41,519 people), NIfTI cine, low prevalence;
- `ecg-archive`: a large clinical ECG archive without CMR (MIMIC-IV-ECG: about 500,000 ECGs), its file layout,
  a sicker case mix, ICD-like disease codes (about 15 % of cases never coded) but no imaging indicators;
- `hospital-1..3`: three small paired hospitals (410, 464 and 338 people in the paper), each with its own scanner,
  vendor, ECG format and case mix; hospital-3 records 8 leads at 250 Hz (the 4 derived limb leads are not stored).

At scale 1 the large sites hold 1,200 and 4,000 subjects and the hospitals their paper sizes; `scale` multiplies
every count (a hospital keeps at least 40 subjects, so each split has people in it).
"""

from __future__ import annotations

from synthetic.cmr_phantom import Scanner
from synthetic.cohort import SiteProfile, SiteSpec
from synthetic.labels import ICD_CODED
from synthetic.latent_state import Prevalence

HOSPITAL_SIZES = (410, 464, 338)  # the paper's three hospitals
BIOBANK_SUBJECTS = 1200
ECG_ARCHIVE_SUBJECTS = 4000
MIN_HOSPITAL_SUBJECTS = 40

BIOBANK = SiteProfile(
    "biobank", "population biobank (UK Biobank-like): ECG and CMR, NIfTI cine, low prevalence",
    Prevalence(cad=0.06, cardiomyopathy=0.03, pericarditis=0.02, pulmonary_hypertension=0.02),
    age_mean=56, ecg_rate=500, ecg_layout="ptbxl", ecg_format="16", mains_hz=50, cmr_format="nifti",
    scanner=Scanner(matrix=128, spacing_mm=1.9, frames=20, intensity_scale=1200, noise=0.03, bias=0.2,
                    myocardium=0.30, tissue=1.05),
    target_epsilon=8.0, vendor="VENDOR-A")
ECG_ARCHIVE = SiteProfile(
    "ecg-archive", "clinical ECG archive (MIMIC-IV-ECG-like): ECG only, MIMIC-IV-ECG layout 500 Hz, sicker case mix",
    Prevalence(cad=0.30, cardiomyopathy=0.12, pericarditis=0.05, pulmonary_hypertension=0.12),
    age_mean=66, ecg_rate=500, ecg_layout="mimic", ecg_format="16", mains_hz=60, cmr_format=None,
    target_epsilon=8.0, labels=ICD_CODED.name)
HOSPITALS = (
    SiteProfile(
        "hospital-1", "tertiary centre, CAD-heavy, DICOM cine (1.5 T, vendor A), MIMIC-IV-ECG layout 500 Hz",
        Prevalence(cad=0.30, cardiomyopathy=0.10, pericarditis=0.05, pulmonary_hypertension=0.08),
        age_mean=64, ecg_rate=500, ecg_layout="mimic", ecg_format="16", mains_hz=60, cmr_format="dicom",
        scanner=Scanner(matrix=128, spacing_mm=2.1, frames=20, intensity_scale=1500, noise=0.03, bias=0.2),
        target_epsilon=8.0, vendor="VENDOR-A"),
    SiteProfile(
        "hospital-2", "cardiomyopathy referral centre, NIfTI cine (3 T, vendor B), PTB-XL layout 1000 Hz",
        Prevalence(cad=0.15, cardiomyopathy=0.25, pericarditis=0.10, pulmonary_hypertension=0.12),
        age_mean=52, ecg_rate=1000, ecg_layout="ptbxl", ecg_format="16", mains_hz=50, cmr_format="nifti",
        scanner=Scanner(matrix=144, spacing_mm=1.75, frames=25, intensity_scale=900, noise=0.05, bias=0.35,
                        myocardium=0.34, tissue=1.15),
        target_epsilon=8.0, vendor="VENDOR-B"),
    SiteProfile(
        "hospital-3", "regional hospital, DICOM cine (1.5 T, vendor C, coarse), 8-lead ECG at 250 Hz (format 212)",
        Prevalence(cad=0.22, cardiomyopathy=0.08, pericarditis=0.06, pulmonary_hypertension=0.10),
        age_mean=61, ecg_rate=250, ecg_layout="ptb", ecg_format="212", mains_hz=50, cmr_format="dicom",
        scanner=Scanner(matrix=112, spacing_mm=2.5, frames=16, intensity_scale=2000, noise=0.04, bias=0.3,
                        myocardium=0.24, tissue=0.9),
        target_epsilon=8.0, vendor="VENDOR-C",
        leads=("i", "ii", "v1", "v2", "v3", "v4", "v5", "v6")),
)


def paper_layout(scale: float = 1.0) -> list[SiteSpec]:
    if scale <= 0:
        raise ValueError(f"scale must be positive, not {scale}")
    return [
        SiteSpec(BIOBANK, max(MIN_HOSPITAL_SUBJECTS, round(BIOBANK_SUBJECTS * scale))),
        SiteSpec(ECG_ARCHIVE, max(MIN_HOSPITAL_SUBJECTS, round(ECG_ARCHIVE_SUBJECTS * scale))),
        *(SiteSpec(profile, max(MIN_HOSPITAL_SUBJECTS, round(size * scale)))
          for profile, size in zip(HOSPITALS, HOSPITAL_SIZES)),
    ]
