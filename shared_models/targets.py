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
