"""A torch Dataset over a prepared site's cache: what the training loop reads every round.

One item per ECG window, or with `per_subject=True` one item per person, each read taking one of that person's
windows at random: the privacy unit of DP-SGD is then the patient (Poisson sampling picks people, and per-sample
clipping bounds everything one person's windows contribute to a step), so the ledger's ε is per patient.
Missing values never become silent zeros: every optional field comes with a mask
(`has_cmr`, `indicator_mask`, `disease_mask`, `lead_mask`, `demographics_mask`), and the placeholder under a
False mask is 0 so batches stack.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from sitedata.site_data import PreparedSite, SubjectEntry


class SiteDataset(Dataset):
    def __init__(self, site: PreparedSite, split: str | None = None, *, per_subject: bool = False, seed: int = 0):
        self.site = site
        self.subjects = [s for s in site.subjects if split is None or s.split == split]
        if per_subject:
            self.items = [(i, None) for i, s in enumerate(self.subjects) if s.n_windows]
        else:
            self.items = [(i, w) for i, s in enumerate(self.subjects) for w in range(s.n_windows)]
        self.window_rng = np.random.default_rng(seed)
        cmr = next((site.cmr(s) for s in self.subjects if s.cmr_key), None)
        self.cmr_shape = tuple(cmr.shape) if cmr is not None else (site.config.cmr.frames, site.config.cmr.image_size, site.config.cmr.image_size)

    def subject_of(self, index: int) -> SubjectEntry:
        return self.subjects[self.items[index][0]]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        subject_index, window = self.items[index]
        subject = self.subjects[subject_index]
        if window is None:
            window = int(self.window_rng.integers(subject.n_windows))
        cmr = self.site.cmr(subject)
        demographics = np.array([subject.age, subject.sex], dtype=np.float32)
        return {
            "ecg": torch.from_numpy(np.array(self.site.ecg(subject)[window])),  # (12, T) mV
            "lead_mask": torch.from_numpy(subject.lead_masks[window].copy()),  # (12,) bool
            "cmr": torch.from_numpy(np.array(cmr)) if cmr is not None else torch.zeros(self.cmr_shape),  # (F, H, W)
            "has_cmr": torch.tensor(cmr is not None),
            "indicators": torch.from_numpy(np.nan_to_num(subject.indicators)),  # (9,) original units
            "indicator_mask": torch.from_numpy(np.isfinite(subject.indicators)),
            "diseases": torch.from_numpy(np.nan_to_num(subject.diseases)),  # (5,) 0/1
            "disease_mask": torch.from_numpy(np.isfinite(subject.diseases)),
            "demographics": torch.from_numpy(np.nan_to_num(demographics)),  # (age years, sex 1=M)
            "demographics_mask": torch.from_numpy(np.isfinite(demographics)),
        }


def mean_cmr_clip(dataset: Dataset) -> np.ndarray | None:
    """The mean CMR clip over a dataset's paired samples: the trivial baseline a generated clip must beat."""
    clips = [item["cmr"].numpy() for item in (dataset[i] for i in range(len(dataset))) if bool(item["has_cmr"])]
    return np.mean(clips, axis=0) if clips else None
