"""The fixed vocabulary every part of the system agrees on: lead order, indicators and diseases."""

# Standard 12-lead order the ECG encoder sees; row i of every ECG tensor is LEADS[i].
LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

# Cardiac-function indicators read off CMR, with their units (manifest column names).
INDICATORS: dict[str, str] = {
    "LVEDV": "mL",  # left-ventricular end-diastolic volume
    "LVESV": "mL",  # left-ventricular end-systolic volume
    "LVSV": "mL",  # left-ventricular stroke volume
    "LVEF": "%",  # left-ventricular ejection fraction
    "LVM": "g",  # left-ventricular myocardial mass
    "RVEDV": "mL",
    "RVESV": "mL",
    "RVSV": "mL",
    "RVEF": "%",
}

# Screening targets (manifest column names, 0/1 or empty when unknown).
DISEASES: tuple[str, ...] = (
    "CAD",
    "cardiomyopathy",
    "pericarditis",
    "heart_failure",
    "pulmonary_hypertension",
)

# Fixed reference scale for standardising indicator targets (typical adult CMR values, mean and SD).
# Fixed rather than fitted to a site's data, so that every site and the server standardise the same way
# and no per-site statistic has to leave a site.
INDICATOR_REFERENCE: dict[str, tuple[float, float]] = {
    "LVEDV": (150.0, 35.0),
    "LVESV": (60.0, 25.0),
    "LVSV": (90.0, 20.0),
    "LVEF": (60.0, 10.0),
    "LVM": (110.0, 30.0),
    "RVEDV": (160.0, 35.0),
    "RVESV": (70.0, 25.0),
    "RVSV": (90.0, 20.0),
    "RVEF": (56.0, 10.0),
}

# Fixed reference prevalence of each screening target (typical of a referral population), for the disease head's
# starting bias: predictions start at the prior, so the first noisy steps learn who is at risk rather than
# spending themselves on the base rate. Fixed, like the indicator reference, so no site statistic is needed.
DISEASE_REFERENCE_PREVALENCE: dict[str, float] = {
    "CAD": 0.25,
    "cardiomyopathy": 0.10,
    "pericarditis": 0.05,
    "heart_failure": 0.10,
    "pulmonary_hypertension": 0.05,
}
