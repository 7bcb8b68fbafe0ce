"""Several sites' prepared data pooled into one dataset, for centralized reference training and experiments run
by whoever holds all the data (never inside a federated study)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np
from torch.utils.data import ConcatDataset, Dataset, Subset

from sitedata.site_config import load_site_config
from sitedata.site_data import PreparedSite, prepare_site
from sitedata.site_dataset import SiteDataset


def find_site_configs(data: Path) -> list[Path]:
    """Site configs of a cohort folder (`DIR/site_configs/*.toml`, as `cardiacfl synth` writes them), a
    folder of configs, or one config file."""
    if data.is_file():
        return [data]
    for folder in (data / "site_configs", data):
        configs = sorted(folder.glob("*.toml"))
        if configs:
            return configs
    raise FileNotFoundError(f"{data}: no site configs (*.toml) in it or in its site_configs/ folder")


def load_sites(data: Path, progress: Callable[[str, int, int], None] | None = None) -> list[PreparedSite]:
    sites = []
    for path in find_site_configs(data):
        config = load_site_config(path)
        sites.append(prepare_site(config, progress=(lambda d, t, s=config.site_id: progress(s, d, t)) if progress else None))
    return sites


def pooled(sites: list[PreparedSite], split: str) -> ConcatDataset:
    return ConcatDataset([SiteDataset(site, split) for site in sites])


def labelled_fraction(dataset: ConcatDataset, fraction: float, seed: int = 0) -> Dataset:
    """A seeded random `fraction` of the labelled training samples (the label-scarce setting)."""
    labelled = [i for i, subject in enumerate(_subjects(dataset)) if subject.labelled]
    if fraction >= 1.0:
        return Subset(dataset, labelled)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(labelled, size=max(2, int(round(len(labelled) * fraction))), replace=False)
    return Subset(dataset, sorted(chosen.tolist()))


def _subjects(dataset: ConcatDataset):
    """The subject behind each sample of a pooled dataset, in sample order."""
    for part in dataset.datasets:
        for index in range(len(part)):
            yield part.subject_of(index)


def data_hash(sites: list[PreparedSite]) -> str:
    """Identifies the training data (cache keys are content hashes) without revealing it."""
    digest = hashlib.sha256()
    for site in sites:
        for s in sorted(site.subjects, key=lambda s: s.subject_id):
            digest.update(f"{site.config.site_id}|{s.split}|{s.ecg_key}|{s.cmr_key}\n".encode())
    return digest.hexdigest()[:16]
