"""What a site does for one federated round, without Flower: load the global weights, train one phase of
the one training loop (DP-SGD through Opacus with the site's lifetime ledger) or evaluate, and return only
model arrays and aggregate metrics. `client/client_app.py` converts Flower messages to these calls.
"""

from __future__ import annotations

import math
import time
from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from client.privacy_ledger import PlannedPhase, PrivacyLedger
from sitedata.model_geometry import check_model_geometry
from sitedata.site_config import SiteConfig, load_site_config
from sitedata.site_data import PreparedSite, prepare_site
from sitedata.site_dataset import SiteDataset
from shared_models.cardiacnets import CardiacNets, build_model
from shared_models.evaluation import evaluate
from shared_models.model_arrays import load_numpy_state, numpy_state
from shared_models.round_contract import RoundConfig, parse_plan_text
from shared_models.site_metrics import MetricKey as K
from shared_models.site_metrics import plain
from shared_models.training import PAIRED_PARTS, TrainOptions, train_phase, trainable_parts
from shared_models.weighted_parts import encode_update


@cache
def _site(config_path: str, model_preset: str) -> tuple[SiteConfig, PreparedSite]:
    config = load_site_config(config_path)
    check_model_geometry(config, model_preset)
    return config, prepare_site(config)


def phase_dataset(site: PreparedSite, phase: str, split: str = "train") -> Dataset:
    """The samples a phase learns from at this site: all ECGs (pretrain), ECG-CMR pairs (generator),
    labelled ECGs (finetune). Its size sets the DP sample rate."""
    dataset = SiteDataset(site, split)
    wanted = {"generator": lambda s: s.cmr_key is not None, "finetune": lambda s: s.labelled}.get(phase, lambda s: True)
    return Subset(dataset, [i for i in range(len(dataset)) if wanted(dataset.subject_of(i))])


def part_examples(data: Subset, parts: set[str]) -> dict[str, int]:
    """Aggregation weight of each trained part: the samples that trained it (pairs for the CMR-side parts)."""
    dataset: SiteDataset = data.dataset
    paired = sum(1 for i in data.indices if dataset.subject_of(i).cmr_key is not None)
    return {p: paired if p in PAIRED_PARTS else len(data) for p in parts}


def site_has_cmr(site: PreparedSite) -> bool:
    return any(s.cmr_key for s in site.subjects if s.split == "train")


def _model(preset: str, global_state: dict[str, np.ndarray]) -> CardiacNets:
    return load_numpy_state(build_model(preset), global_state)


def _steps_per_epoch(samples: int, batch_size: int) -> tuple[float, int]:
    """(sample rate, steps per epoch) exactly as Opacus' DP data loader sets them from a loader of
    ceil(samples / batch_size) batches: rate = 1 / that, one epoch = that many steps."""
    if samples == 0:
        return 0.0, 0
    steps = math.ceil(samples / batch_size)
    return 1.0 / steps, steps


def _plan(site: PreparedSite, plan_text: str, batch_size: int) -> list[PlannedPhase]:
    phases = []
    for name, rounds, epochs in parse_plan_text(plan_text):
        samples = len(phase_dataset(site, name))
        rate, per_epoch = _steps_per_epoch(samples, batch_size)
        phases.append(PlannedPhase(name, rate, rounds * epochs * per_epoch))
    return phases


def ledger_for(config: SiteConfig) -> PrivacyLedger:
    return PrivacyLedger.open(config.state_dir / "privacy_ledger.json", site_id=config.site_id,
                              target_epsilon=config.privacy.target_epsilon, target_delta=config.privacy.target_delta)


def train_round(site_config: str | Path, global_state: dict[str, np.ndarray], rc: RoundConfig) -> tuple[list[np.ndarray], dict]:
    """-> (encoded arrays for part-weighted averaging, aggregate metrics)."""
    started = time.perf_counter()
    config, site = _site(str(site_config), rc.preset)
    metrics: dict = {K.SITE: config.site_id, K.PHASE: rc.phase, K.ROUND: rc.server_round, K.DECLINED: 0, K.REASON: ""}

    def declined(reason: str) -> tuple[list[np.ndarray], dict]:
        metrics.update({K.DECLINED: 1, K.REASON: reason, K.EXAMPLES: 0})
        return encode_update(global_state, {}, rc.max_site_examples), plain(metrics)

    if rc.local_epochs > config.training.max_local_epochs:
        return declined(f"round asks for {rc.local_epochs} local epochs; this site allows at most "
                        f"{config.training.max_local_epochs} (training.max_local_epochs)")
    data = phase_dataset(site, rc.phase)
    has_cmr = site_has_cmr(site)
    model = _model(rc.preset, global_state)
    options = TrainOptions(phase=rc.phase, epochs=rc.local_epochs, lr=rc.lr, proximal_mu=rc.proximal_mu,
                           finetune_mode=rc.finetune_mode, alignment="distill" if rc.dp else "infonce",
                           seed=rc.seed + rc.server_round, device=config.training.device)
    parts = trainable_parts(options, has_cmr=has_cmr) if len(data) else set()
    batch = config.training.batch_size
    privatizer = None
    if rc.dp and parts:
        ledger = ledger_for(config)
        sigma = ledger.plan(_plan(site, rc.plan, batch))
        rate, per_epoch = _steps_per_epoch(len(data), batch)
        reason = ledger.check(rate, per_epoch * rc.local_epochs)
        metrics.update({K.NOISE_MULTIPLIER: sigma, K.MAX_GRAD_NORM: config.privacy.max_grad_norm,
                        K.DELTA: config.privacy.target_delta, K.TARGET_EPSILON: config.privacy.target_epsilon,
                        K.SAMPLE_RATE: rate})
        if reason:
            ledger.record_decline(study=rc.study, phase=rc.phase, server_round=rc.server_round, reason=reason)
            metrics[K.EPSILON] = ledger.epsilon
            return declined(reason)
        from client.privacy import OpacusPrivatizer  # Opacus costs ~1 s to import: only when DP is on

        privatizer = OpacusPrivatizer(noise_multiplier=sigma, max_grad_norm=config.privacy.max_grad_norm, history=ledger.history)
    if not parts:
        metrics.update({K.EXAMPLES: 0, K.REASON: f"nothing to train in {rc.phase} at this site"})
        return encode_update(global_state, {}, rc.max_site_examples), plain(metrics)
    loader = DataLoader(data, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(rc.seed + rc.server_round))
    metrics[K.PREPARE_S] = time.perf_counter() - started
    result = train_phase(model, loader, options, has_cmr=has_cmr, privatize=privatizer)
    if privatizer is not None:
        privatizer.close()
        metrics[K.EPSILON] = ledger.record(privatizer.history, study=rc.study, phase=rc.phase,
                                           server_round=rc.server_round, steps=result.steps)
    metrics.update({K.EXAMPLES: len(data), K.LOSS: result.mean_loss, K.STEPS: result.steps, K.SECONDS: result.seconds})
    return encode_update(numpy_state(model), part_examples(data, parts), rc.max_site_examples), plain(metrics)


def evaluate_round(site_config: str | Path, global_state: dict[str, np.ndarray], rc: RoundConfig) -> tuple[float, int, dict]:
    """Score the global model on the site's validation split -> (loss, examples, aggregate metrics)."""
    config, site = _site(str(site_config), rc.preset)
    model = _model(rc.preset, global_state)
    loader = DataLoader(SiteDataset(site, "val"), batch_size=64)
    result = evaluate(model, loader, rc.phase, device=config.training.device, seed=rc.seed)
    examples = int(result.pop(K.NUM_EXAMPLES))
    loss = result[K.LOSS]
    metrics = {k: float(v) for k, v in result.items()} | {K.SITE: config.site_id, K.PHASE: rc.phase}
    if config.state_dir.joinpath("privacy_ledger.json").is_file():
        metrics[K.EPSILON] = ledger_for(config).epsilon
    return (loss if math.isfinite(loss) else 0.0), examples, plain(metrics)
