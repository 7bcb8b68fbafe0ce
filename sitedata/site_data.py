"""Prepare a site's data: manifest -> preprocessed ECG windows and CMR clips in the on-site cache -> a
list of usable subjects and a data report.

One bad record never stops the site: its problem is reported and the other records go on. A subject
whose CMR fails stays in as ECG-only; a subject whose ECG fails is rejected (the ECG is the model input).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from sitedata.cmr_ingest import CmrError, read_cmr
from sitedata.data_report import DataReport, RecordProblem
from sitedata.ecg_ingest import EcgError, read_ecg, wfdb_record_base
from sitedata.manifest import SPLITS, ManifestError, ManifestRow, read_manifest
from sitedata.preprocess_cache import CachedFailure, PreprocessCache
from sitedata.site_config import SiteConfig
from shared_models.targets import DISEASES, INDICATORS, LEADS


@dataclass
class SubjectEntry:
    """A usable subject: labels from the manifest and cache keys of its preprocessed tensors."""

    subject_id: str
    split: str
    ecg_key: str
    lead_masks: np.ndarray  # (windows, 12) bool
    cmr_key: str | None
    age: float
    sex: float
    indicators: np.ndarray  # (9,) NaN where unlabelled
    diseases: np.ndarray  # (5,) NaN where unlabelled

    @property
    def n_windows(self) -> int:
        return len(self.lead_masks)

    @property
    def labelled(self) -> bool:
        """Has at least one indicator or disease label (what fine-tuning learns from)."""
        return bool(np.isfinite(self.indicators).any() or np.isfinite(self.diseases).any())


@dataclass
class PreparedSite:
    config: SiteConfig
    cache: PreprocessCache
    subjects: list[SubjectEntry] = field(default_factory=list)
    report: DataReport | None = None

    def ecg(self, subject: SubjectEntry) -> np.ndarray:
        """(windows, 12, T) float32, memory-mapped from the cache."""
        return self.cache.load_array(subject.ecg_key)

    def cmr(self, subject: SubjectEntry) -> np.ndarray | None:
        """(frames, H, W) float32 in [0, 1], memory-mapped; None for ECG-only subjects."""
        return None if subject.cmr_key is None else self.cache.load_array(subject.cmr_key)


def prepare_site(config: SiteConfig, progress: Callable[[int, int], None] | None = None) -> PreparedSite:
    report = DataReport(site_id=config.site_id, manifest=str(config.manifest))
    cache = PreprocessCache(config.cache_dir)
    site = PreparedSite(config=config, cache=cache, report=report)
    try:
        rows, problems = read_manifest(config.manifest, config.data_root)
    except ManifestError as err:
        report.problems.append(RecordProblem("", str(config.manifest), "manifest", str(err)))
        report.counts = _counts([])
        return site
    report.problems += problems
    report.manifest_rows = len(rows) + sum(1 for p in problems if p.severity == "rejected")

    use_cmr = "cmr" in config.modalities
    for index, row in enumerate(rows):
        entry = _prepare_subject(row, config, cache, report, use_cmr)
        if entry is not None:
            site.subjects.append(entry)
        if progress:
            progress(index + 1, len(rows))
    cache.flush()
    report.counts = _counts(site.subjects)
    return site


def _prepare_subject(row: ManifestRow, config: SiteConfig, cache: PreprocessCache, report: DataReport, use_cmr: bool):
    ecg = _cached_or_reason(cache, "ecg", wfdb_record_files(row.ecg_path), config.ecg, lambda: _decode_ecg(row.ecg_path, config))
    if isinstance(ecg, str):
        report.problems.append(RecordProblem(row.subject_id, str(row.ecg_path), "ecg", ecg))
        return None
    ecg_key, ecg_meta = ecg
    for lead, why in ecg_meta.get("flagged_leads", {}).items():
        report.problems.append(RecordProblem(row.subject_id, str(row.ecg_path), "ecg", f"lead {lead} masked: {why}", "warning"))
    for window, why in ecg_meta.get("dropped_windows", {}).items():
        report.problems.append(RecordProblem(row.subject_id, str(row.ecg_path), "ecg", f"window {window} not used: {why}", "warning"))
    if ecg_meta.get("missing_leads"):
        has = [lead for lead in LEADS if lead not in ecg_meta["missing_leads"]]
        report.problems.append(RecordProblem(row.subject_id, str(row.ecg_path), "ecg",
                                             f"reduced-lead record: has {', '.join(has)} ({len(has)} of 12); "
                                             f"{', '.join(ecg_meta['missing_leads'])} masked", "warning"))

    cmr_key = None
    if row.cmr_path is not None and use_cmr:
        cmr = _cached_or_reason(cache, "cmr", cmr_source_files(row.cmr_path), config.cmr, lambda: _decode_cmr(row.cmr_path, config))
        if isinstance(cmr, str):
            report.problems.append(RecordProblem(row.subject_id, str(row.cmr_path), "cmr", f"{cmr}; subject kept as ECG-only"))
        else:
            cmr_key = cmr[0]
            if cmr[1].get("heart_offset_mm") is not None:
                report.heart_offsets_mm[row.subject_id] = cmr[1]["heart_offset_mm"]
            for warning in cmr[1].get("warnings", []):  # the clip is used; what the reader noticed is shown
                report.problems.append(RecordProblem(row.subject_id, str(row.cmr_path), "cmr", warning, "warning"))

    return SubjectEntry(
        subject_id=row.subject_id, split=row.split, ecg_key=ecg_key,
        lead_masks=np.asarray(ecg_meta["lead_masks"], dtype=bool), cmr_key=cmr_key,
        age=row.age, sex=row.sex, indicators=row.indicators, diseases=row.diseases,
    )


def _cached_or_reason(cache: PreprocessCache, modality: str, files: list[Path], settings, decode) -> tuple[str, dict] | str:
    """(key, meta) from the cache, decoding and storing on a miss (failures are stored too); on failure
    the reason as text, so that one bad record never stops the site."""
    try:
        if not files:
            decode()  # nothing to key on: the reader raises its own "not found" error naming the file
            raise OSError("source files not found")
        key = cache.key(modality, files, settings)
        hit = cache.get(key)
        if hit is not None:
            return key, hit[1]
        try:
            array, meta = decode()
        except (EcgError, CmrError) as err:
            cache.put_failure(key, str(err))
            raise
        cache.put(key, array, meta)
        return key, meta
    except (EcgError, CmrError, CachedFailure, OSError) as err:
        return str(err)
    except Exception as err:  # an unforeseen reader failure still must not stop the site
        return f"unexpected {type(err).__name__}: {err}"


def _decode_ecg(path: Path, config: SiteConfig):
    windows = read_ecg(path, config.ecg)
    array = np.stack([w.signal for w in windows])  # (W, 12, T)
    meta = dict(windows[0].meta)
    meta.pop("window_index", None)
    meta.pop("window_start_s", None)
    meta["lead_masks"] = [w.lead_mask.tolist() for w in windows]
    return array, meta


def _decode_cmr(path: Path, config: SiteConfig):
    clip = read_cmr(path, config.cmr)
    return clip.frames, clip.meta


def wfdb_record_files(record: Path) -> list[Path]:
    """The header and the signal files beside it (every file sharing the record's name)."""
    base = wfdb_record_base(record)
    if not Path(f"{base}.hea").is_file():
        return []
    return sorted(p for p in base.parent.glob(base.name + ".*") if p.is_file())


def cmr_source_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [path] if path.is_file() else []


def _counts(subjects: list[SubjectEntry]) -> dict:
    def per_split(predicate, weight=lambda s: 1) -> dict:
        counter = Counter()
        for s in subjects:
            if predicate(s):
                counter[s.split] += weight(s)
        return {split: counter.get(split, 0) for split in SPLITS}

    labels = {}
    for i, name in enumerate(INDICATORS):
        labels[name] = {"labelled": int(sum(np.isfinite(s.indicators[i]) for s in subjects)), "positive": None}
    for i, name in enumerate(DISEASES):
        values = [s.diseases[i] for s in subjects if np.isfinite(s.diseases[i])]
        labels[name] = {"labelled": len(values), "positive": int(sum(values))}
    return {
        "subjects_with_ecg": per_split(lambda s: True),
        "ecg_windows": per_split(lambda s: True, weight=lambda s: s.n_windows),
        "paired": per_split(lambda s: s.cmr_key is not None),
        "ecg_only": per_split(lambda s: s.cmr_key is None),
        "reduced_lead": per_split(lambda s: not s.lead_masks.all()),
        "labels": labels,
    }
