"""Site manifest (CSV): one row per subject with the ECG record, an optional CMR study, optional labels
and the split.

Columns: `subject_id`, `ecg_path` (required); `cmr_path`, `split` (train/val/test), `age`, `sex` (M/F),
the indicator columns of `shared_models.targets.INDICATORS` and the disease columns of `DISEASES`
(optional; an empty cell means unknown). Paths are relative to the site's data root.
Row problems are returned, not raised: one bad row never stops a site.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sitedata.data_report import RecordProblem
from shared_models.targets import DISEASES, INDICATORS

REQUIRED_COLUMNS = ("subject_id", "ecg_path")
SPLITS = ("train", "val", "test")


class ManifestError(ValueError):
    """The manifest as a whole cannot be read (missing file or required column)."""


@dataclass
class ManifestRow:
    line: int  # line number in the CSV, for messages
    subject_id: str
    ecg_path: Path
    cmr_path: Path | None
    split: str
    age: float  # NaN when unknown
    sex: float  # 1 male, 0 female, NaN unknown
    indicators: np.ndarray  # (len(INDICATORS),) float32, NaN where unlabelled
    diseases: np.ndarray  # (len(DISEASES),) float32 in {0, 1}, NaN where unlabelled


def read_manifest(path: Path, data_root: Path) -> tuple[list[ManifestRow], list[RecordProblem]]:
    if not path.is_file():
        raise ManifestError(f"{path}: manifest file not found")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise ManifestError(f"{path}: missing required column(s) {', '.join(missing)} (has: {', '.join(columns)})")
        rows: list[ManifestRow] = []
        problems: list[RecordProblem] = []
        first_line: dict[str, int] = {}
        for line, record in enumerate(reader, start=2):
            row, row_problems = _parse_row(record, line, path, data_root)
            problems += row_problems
            if row is None:
                continue
            if row.subject_id in first_line:
                problems.append(RecordProblem(
                    row.subject_id, str(path), "manifest",
                    f"duplicate subject id (first on line {first_line[row.subject_id]}); line {line} skipped",
                ))
                continue
            first_line[row.subject_id] = line
            rows.append(row)
    return rows, problems


def _parse_row(record: dict, line: int, path: Path, data_root: Path):
    problems: list[RecordProblem] = []
    subject = (record.get("subject_id") or "").strip()
    where = f"{path}:{line}"
    if not subject:
        return None, [RecordProblem("", where, "manifest", "empty subject_id; row skipped")]
    ecg = (record.get("ecg_path") or "").strip()
    if not ecg:
        return None, [RecordProblem(subject, where, "manifest", "empty ecg_path; row skipped")]
    cmr = (record.get("cmr_path") or "").strip()

    def warn(reason: str) -> None:
        problems.append(RecordProblem(subject, where, "manifest", reason, severity="warning"))

    split = (record.get("split") or "").strip().lower()
    if split and split not in SPLITS:
        warn(f"split {split!r} is not one of {', '.join(SPLITS)}; assigned by subject id instead")
        split = ""
    split = split or default_split(subject)

    indicators = np.array([_number(record, name, warn) for name in INDICATORS], dtype=np.float32)
    diseases = np.array([_binary(record, name, warn) for name in DISEASES], dtype=np.float32)
    age = _number(record, "age", warn)
    sex_text = (record.get("sex") or "").strip().upper()
    sex = {"M": 1.0, "MALE": 1.0, "F": 0.0, "FEMALE": 0.0, "": math.nan}.get(sex_text)
    if sex is None:
        warn(f"sex {sex_text!r} not M/F; treated as unknown")
        sex = math.nan
    row = ManifestRow(
        line=line, subject_id=subject, ecg_path=data_root / ecg, cmr_path=data_root / cmr if cmr else None,
        split=split, age=age, sex=sex, indicators=indicators, diseases=diseases,
    )
    return row, problems


def default_split(subject_id: str) -> str:
    """Deterministic 80/10/10 split by subject id, so a subject never moves between splits."""
    bucket = int(hashlib.sha256(subject_id.encode()).hexdigest()[:8], 16) % 10
    return "val" if bucket == 8 else "test" if bucket == 9 else "train"


def _number(record: dict, column: str, warn) -> float:
    text = (record.get(column) or "").strip()
    if not text:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        warn(f"column {column}: {text!r} is not a number; treated as unlabelled")
        return math.nan
    if not math.isfinite(value):
        warn(f"column {column}: {text!r} is not finite; treated as unlabelled")
        return math.nan
    return value


def _binary(record: dict, column: str, warn) -> float:
    text = (record.get(column) or "").strip().lower()
    if not text:
        return math.nan
    value = {"0": 0.0, "1": 1.0, "0.0": 0.0, "1.0": 1.0, "false": 0.0, "true": 1.0, "no": 0.0, "yes": 1.0}.get(text)
    if value is None:
        warn(f"column {column}: {text!r} is not 0/1; treated as unlabelled")
        return math.nan
    return value
