"""One WFDB ECG -> cardiac-function indicators, disease probabilities and a generated CMR cine clip.

The record is read with the same ingest as site data, at the checkpoint's sampling rate and window; a
record longer than one window is scored on up to `max_windows` windows and the predictions averaged.
Age and sex are taken from the header comments where the record has them (PTB-style `# age: 81`, or
PhysioNet's `<age>: 25 <sex>: M`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import wfdb

from sitedata.ecg_ingest import read_ecg, wfdb_record_base
from sitedata.site_config import EcgSettings
from shared_models.cardiacnets import CardiacNets
from shared_models.checkpoint import load_checkpoint
from shared_models.cine_media import save_frames, save_gif
from shared_models.targets import DISEASES, INDICATORS, LEADS
from shared_models.training import unstandardise_indicators


@dataclass
class Prediction:
    record: str
    checkpoint_phase: str
    windows: int
    leads_used: list[str]
    demographics: dict[str, float | None]
    indicators: dict[str, float]  # original units (INDICATORS)
    disease_probability: dict[str, float]
    clip_files: dict[str, str] = field(default_factory=dict)  # "gif", "frames" (folder)


def header_demographics(record: Path) -> tuple[float | None, float | None]:
    """(age in years, sex 1 = male / 0 = female) from WFDB header comments, None where absent."""
    comments = " ".join(wfdb.rdheader(str(wfdb_record_base(record))).comments or [])
    age = re.search(r"\bage>?\s*[:=]\s*(\d+(?:\.\d+)?)", comments, re.IGNORECASE)
    sex = re.search(r"\bsex>?\s*[:=]\s*(male|female|m|f)\b", comments, re.IGNORECASE)
    return (float(age.group(1)) if age else None,
            (1.0 if sex.group(1).lower().startswith("m") else 0.0) if sex else None)


def predict_record(model: CardiacNets, record: Path, *, phase: str = "", max_windows: int = 3,
                   out: Path | None = None, allow_reduced_leads: bool = False, seed: int = 0) -> Prediction:
    cfg = model.config.ecg
    settings = EcgSettings(sampling_rate_hz=cfg.sampling_rate_hz, window_s=cfg.window_s, max_windows=max_windows,
                           allow_reduced_leads=allow_reduced_leads)
    samples = read_ecg(record, settings)
    age, sex = header_demographics(record)
    n = len(samples)
    batch = {
        "ecg": torch.from_numpy(np.stack([s.signal for s in samples])),
        "lead_mask": torch.from_numpy(np.stack([s.lead_mask for s in samples])),
        "demographics": torch.tensor([[age or 0.0, sex or 0.0]] * n),
        "demographics_mask": torch.tensor([[age is not None, sex is not None]] * n),
    }
    model.eval()
    with torch.no_grad():
        indicators, logits = model.heads(batch)
        indicators = unstandardise_indicators(indicators).mean(0)
        probabilities = logits.sigmoid().mean(0)
    prediction = Prediction(
        record=str(record), checkpoint_phase=phase, windows=n,
        leads_used=[lead for lead, used in zip(LEADS, samples[0].lead_mask) if used],
        demographics={"age": age, "sex_male": sex},
        indicators={name: round(float(v), 2) for name, v in zip(INDICATORS, indicators)},
        disease_probability={name: round(float(p), 4) for name, p in zip(DISEASES, probabilities)},
    )
    if out is not None:
        first = {k: v[:1] for k, v in batch.items()}
        clip = model.generate(first, generator=torch.Generator().manual_seed(seed))[0].numpy()
        stem = wfdb_record_base(Path(record)).name  # RECORD, also when given as RECORD.hea
        prediction.clip_files = {
            "gif": str(save_gif(clip, out / f"{stem}_cmr.gif")),
            "frames": str(save_frames(clip, out / f"{stem}_cmr_frames")[0].parent),
        }
    return prediction


def predict_from_checkpoint(checkpoint: Path, record: Path, *, out: Path | None = None, max_windows: int = 3,
                            allow_reduced_leads: bool = False) -> Prediction:
    model, meta = load_checkpoint(checkpoint)
    return predict_record(model, record, phase=meta["phase"], max_windows=max_windows, out=out,
                          allow_reduced_leads=allow_reduced_leads)
