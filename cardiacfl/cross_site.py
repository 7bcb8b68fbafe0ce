"""The full cross-site matrix, where one party holds every site's data (simulation): each site's own fine-tuned
model, kept in its cache after its last fine-tuning round, scored on every site's validation split. In a
deployment a site's model never leaves it, and only the diagonal exists (client/site_round.py)."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import DataLoader

from client.site_round import local_model_path
from protocol.round_record import SiteReport
from rundb.writer import add_site_reports
from shared_models.checkpoint import load_checkpoint
from shared_models.evaluation import evaluate
from protocol.site_metrics import MetricKey as K
from sitedata.site_config import load_site_config
from sitedata.site_data import prepare_site
from sitedata.site_dataset import SiteDataset

MAX_SITES = 20  # n x n evaluations: beyond this the matrix costs more than the study


def fill_cross_site_matrix(db_path: Path, study_id: int, site_configs: list[Path]) -> int:
    """Record one `cross` row per (model, site) pair; returns how many were written (0 above MAX_SITES)."""
    if len(site_configs) > MAX_SITES:
        return 0
    configs = [load_site_config(path) for path in site_configs]
    validation = {config.site_id: SiteDataset(prepare_site(config), "val") for config in configs}
    written = 0
    for owner in configs:
        path = local_model_path(owner)
        if not path.is_file():
            continue
        model, meta = load_checkpoint(path)
        reports = []
        for site, data in validation.items():
            if len(data) == 0:
                continue
            scores = evaluate(model, DataLoader(data, batch_size=64), "finetune")
            keep = {k: scores[k] for k in (K.LOSS, K.MEAN_AUROC, K.MEAN_R2) if k in scores}
            reports.append(SiteReport(site, "cross", int(scores[K.NUM_EXAMPLES]), keep | {K.MODEL: f"{owner.site_id} (local)"}))
        add_site_reports(str(db_path), study_id, "finetune", int(meta.get("step", 0)), reports)
        written += len(reports)
    return written
