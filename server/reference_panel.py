"""The lab's reference panel: labelled ECG-CMR pairs the coordinating lab itself holds (for the demo, a
synthetic cohort drawn apart from the sites'), read through the same site ingest. After every round the ServerApp
scores the global model on the whole panel (held-out data: no site trained on it), and after generator rounds it
generates CMR clips from the first few ECGs for the dashboard's gallery. No site data is involved."""

from __future__ import annotations

from functools import cached_property

import torch
from torch.utils.data import DataLoader

from sitedata.site_config import load_site_config
from sitedata.site_data import prepare_site
from sitedata.site_dataset import SiteDataset, mean_cmr_clip
from rundb.schema import npy_bytes
from shared_models import metrics
from shared_models.cardiacnets import CardiacNets
from shared_models.evaluation import evaluate, paired_gains
from protocol.site_metrics import lab_key


PANEL_BOOTSTRAP = 200  # resamples behind every held-out figure's 95 % interval
GENERATED = 48  # clips generated per generator round for the panel's image scores


class LabPanel:
    def __init__(self, site_config: str):
        config = load_site_config(site_config)
        self.data_root = config.data_root
        self.dataset = SiteDataset(prepare_site(config))  # every split: the lab's own data

    def references(self, size: int) -> list[tuple[str, dict]]:
        """The first `size` windows, for the generation gallery."""
        return [(self.dataset.subject_of(i).subject_id, self.dataset[i]) for i in range(min(size, len(self.dataset)))]

    @cached_property
    def mean_clip(self):
        """The panel's mean CMR clip, the generator's baseline: the same every round, so read once."""
        return mean_cmr_clip(self.dataset)

    def evaluate(self, model: CardiacNets, phase: str, *, seed: int = 0) -> dict[str, float]:
        """The global model's metrics on the whole panel, keys prefixed `lab/` (baselines and 95 % intervals included)."""
        reference = _training_mean_clip(model, self.mean_clip) if phase == "generator" else None
        result = evaluate(model, DataLoader(self.dataset, batch_size=64), phase, seed=seed, bootstrap=PANEL_BOOTSTRAP,
                          generate_samples=GENERATED if phase == "generator" else 0, reference_clip=reference)
        return {lab_key(k): v for k, v in result.items()}

    def gains(self, model: CardiacNets, public_model: CardiacNets, phase: str, *, seed: int = 0) -> dict[str, float]:
        """The global model's held-out gain over the public model alone, paired on the panel's subjects
        (`lab/gain/<key>` with its 95 % interval)."""
        result = paired_gains(model, public_model, DataLoader(self.dataset, batch_size=64), phase,
                              bootstrap=PANEL_BOOTSTRAP, seed=seed)
        return {lab_key(k): v for k, v in result.items()}


def _training_mean_clip(model: CardiacNets, panel_mean):
    """The baseline a generated clip must beat: the mean clip of the data the generator learned from (its prior,
    from the lab's public data) where it has one, else the panel's own mean (a stricter, test-set baseline)."""
    prior = (model.generator.prior_clip.numpy() + 1) / 2
    return prior if model.generator.prior_clip.abs().sum() > 0 else panel_mean


def generations(model: CardiacNets, panel: list[tuple[str, dict]], seed: int = 0) -> list[dict]:
    """The gallery of one round: a clip generated from each reference ECG, beside the real clip and their scores."""
    if not panel:
        return []
    batch = {k: torch.stack([item[k] for _, item in panel]) for k in panel[0][1]}
    model.eval()
    clips = model.generate(batch, generator=torch.Generator().manual_seed(seed)).numpy()
    rows = []
    for (reference, item), clip in zip(panel, clips):
        real = item["cmr"].numpy() if bool(item["has_cmr"]) else None
        rows.append({"reference": reference, "ecg": npy_bytes(item["ecg"].numpy()), "generated": npy_bytes(clip),
                     "real": npy_bytes(real) if real is not None else None,
                     "ssim": metrics.ssim(real, clip) if real is not None else None,
                     "psnr": metrics.psnr(real, clip) if real is not None else None})
    return rows
