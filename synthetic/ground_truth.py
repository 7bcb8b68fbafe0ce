"""The synthetic cohort's answer key: per subject, the latent cardiac state, the ideal ECG parameters, what in
the cine is not the heart, and the true disease status beside what the site recorded.

It is written beside the cohort (`<cohort>/ground_truth/<site>.csv`, outside every site's data root), because
a real site has no such file: ingest and training never read it (a test checks that), the cohort oracles
(`benchmarks/cohort_oracles.py`) do. Floats are written in full so that a subject can be re-rendered exactly.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from shared_models.targets import DISEASES
from synthetic.cmr_phantom import CmrNuisance, Scanner
from synthetic.ecg_wave_model import EcgParameters
from synthetic.latent_state import CardiacState

FOLDER = "ground_truth"
_STATE_FIELDS = [f.name for f in dataclasses.fields(CardiacState) if f.name != "diseases"]
_PARAM_FIELDS = [f.name for f in dataclasses.fields(EcgParameters)]


@dataclass(frozen=True)
class SubjectTruth:
    subject_id: str
    split: str
    state: CardiacState  # state.diseases: the true status
    ecg: EcgParameters
    nuisance: CmrNuisance | None  # None at an ECG-only site
    recorded: dict[str, int | None]  # the site's labels (None: unlabelled)


@dataclass(frozen=True)
class SiteTruth:
    site_id: str
    scanner: Scanner | None
    label_definition: str
    subjects: list[SubjectTruth]


def truth_row(subject_id: str, split: str, state: CardiacState, params: EcgParameters,
              nuisance: CmrNuisance | None, recorded: dict[str, int] | None) -> dict:
    row = {"subject_id": subject_id, "split": split}
    row.update({name: getattr(state, name) for name in _STATE_FIELDS})
    row.update({f"true_{d}": state.diseases[d] for d in DISEASES})
    row.update({f"recorded_{d}": "" if recorded is None else recorded[d] for d in DISEASES})
    for name in _PARAM_FIELDS:
        value = getattr(params, name)
        if isinstance(value, tuple):
            row.update({f"ecg_{name}_{axis}": v for axis, v in zip("xyz", value)})
        else:
            row[f"ecg_{name}"] = value
    centre, torso, bias = (nuisance.centre_mm, nuisance.torso_mm, nuisance.bias) if nuisance else ((), (), ())
    row.update({f"cmr_centre_{k}": v for k, v in zip(("row", "col"), centre or ("", ""))})
    row.update({f"cmr_torso_{k}": v for k, v in zip(("w", "h"), torso or ("", ""))})
    row.update({f"cmr_bias_{k}": v for k, v in zip(("x", "y", "xy"), bias or ("", "", ""))})
    return row


def write_site_truth(cohort: Path, site_id: str, rows: list[dict], scanner: Scanner | None,
                     label_definition: str) -> Path:
    folder = Path(cohort) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{site_id}.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["subject_id"])
        writer.writeheader()
        writer.writerows(rows)
    meta = {"site_id": site_id, "label_definition": label_definition,
            "scanner": dataclasses.asdict(scanner) if scanner else None}
    (folder / f"{site_id}.json").write_text(json.dumps(meta, indent=1) + "\n")
    return path


def read_cohort_truth(cohort: Path) -> list[SiteTruth]:
    """Every site's answer key in a cohort folder written by `synth`."""
    folder = Path(cohort) / FOLDER
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no ground-truth folder (only cohorts written by `cardiacfl synth` have one)")
    sites = []
    for meta_path in sorted(folder.glob("*.json")):
        meta = json.loads(meta_path.read_text())
        with meta_path.with_suffix(".csv").open(newline="") as handle:
            subjects = [_subject(row) for row in csv.DictReader(handle)]
        scanner = Scanner(**meta["scanner"]) if meta["scanner"] else None
        sites.append(SiteTruth(meta["site_id"], scanner, meta["label_definition"], subjects))
    return sites


def _subject(row: dict) -> SubjectTruth:
    values = {}
    for f in dataclasses.fields(CardiacState):
        if f.name == "diseases":
            continue
        raw = row[f.name]
        values[f.name] = raw if f.name == "cm_type" else int(raw) if f.name == "sex" else float(raw)
    state = CardiacState(**values, diseases={d: int(row[f"true_{d}"]) for d in DISEASES})
    params = {}
    for f in dataclasses.fields(EcgParameters):
        if f"ecg_{f.name}" in row:
            params[f.name] = float(row[f"ecg_{f.name}"])
        else:
            params[f.name] = tuple(float(row[f"ecg_{f.name}_{axis}"]) for axis in "xyz")
    nuisance = None
    if row["cmr_centre_row"] != "":
        number = lambda *keys: tuple(float(row[k]) for k in keys)  # noqa: E731
        nuisance = CmrNuisance(number("cmr_centre_row", "cmr_centre_col"), number("cmr_torso_w", "cmr_torso_h"),
                               number("cmr_bias_x", "cmr_bias_y", "cmr_bias_xy"))
    recorded = {d: None if row[f"recorded_{d}"] == "" else int(row[f"recorded_{d}"]) for d in DISEASES}
    return SubjectTruth(row["subject_id"], row["split"], state, EcgParameters(**params), nuisance, recorded)
