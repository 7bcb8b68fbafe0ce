"""The lab's reference panel: a few ECG-CMR pairs the coordinating lab itself holds (for the demo, a small
synthetic cohort), read through the same site ingest. After generator rounds the ServerApp generates CMR
clips from the panel's ECGs with the global model and stores them, with SSIM/PSNR against the real clips,
for the dashboard's gallery. No site data is involved."""

from __future__ import annotations

import torch

from sitedata.site_config import load_site_config
from sitedata.site_data import prepare_site
from sitedata.site_dataset import SiteDataset
from rundb.schema import npy_bytes
from rundb.writer import RunDatabase
from shared_models import metrics
from shared_models.cardiacnets import CardiacNets


def load_panel(site_config: str, size: int) -> list[tuple[str, dict]]:
    site = prepare_site(load_site_config(site_config))
    dataset = SiteDataset(site)
    return [(dataset.subject_of(i).subject_id, dataset[i]) for i in range(min(size, len(dataset)))]


def record_generations(db: RunDatabase, study_id: int, phase: str, server_round: int, model: CardiacNets,
                       panel: list[tuple[str, dict]], seed: int = 0) -> None:
    if not panel:
        return
    batch = {k: torch.stack([item[k] for _, item in panel]) for k in panel[0][1]}
    model.eval()
    clips = model.generate(batch, generator=torch.Generator().manual_seed(seed)).numpy()
    for (reference, item), clip in zip(panel, clips):
        real = item["cmr"].numpy() if bool(item["has_cmr"]) else None
        db.add_generation(study_id, phase, server_round, reference, ecg=npy_bytes(item["ecg"].numpy()),
                          generated=npy_bytes(clip), real=npy_bytes(real) if real is not None else None,
                          ssim=metrics.ssim(real, clip) if real is not None else None,
                          psnr=metrics.psnr(real, clip) if real is not None else None)
