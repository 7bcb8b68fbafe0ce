"""What a site does for one federated round, without Flower: load the global weights, train one phase of
the one training loop (DP-SGD through Opacus with the site's lifetime ledger) or evaluate, and return only
model arrays and aggregate metrics. `client/client_app.py` converts Flower messages to these calls.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from functools import cache
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from client.privacy_ledger import LedgerTampered, PlannedPhase, PrivacyLedger, locked_ledger
from client.metric_release import releasable
from client.site_policy import policy_refusal
from sitedata.model_geometry import check_model_geometry
from sitedata.site_config import SiteConfig, load_site_config
from sitedata.site_data import PreparedSite, prepare_site
from sitedata.site_dataset import SiteDataset
from shared_models.cardiacnets import CardiacNets, PublicBank, build_model
from protocol.public_bank import decode_bank
from shared_models.checkpoint import load_checkpoint, save_checkpoint
from shared_models.evaluation import evaluate
from shared_models.model_arrays import load_numpy_state, numpy_state, unpack_state
from protocol.round_contract import RoundConfig, parse_plan_text
from protocol.site_metrics import MetricKey as K
from protocol.site_metrics import local_key, plain
from shared_models.training import (PAIRED_PARTS, PhaseObjective, TrainOptions, TrainResult, reference_pos_weight, resolve_device,
                                    set_trainable, top_level_parts, train_phase, trainable_parts)
from protocol.codec import encode_update, update_problem


@cache
def _site(config_path: str, model_preset: str) -> tuple[SiteConfig, PreparedSite]:
    config = load_site_config(config_path)
    check_model_geometry(config, model_preset)
    return config, prepare_site(config)


def forget_prepared_sites() -> None:
    """Drop every site's prepared data held in this process (a warm worker does so when a new study starts)."""
    _site.cache_clear()


def phase_dataset(site: PreparedSite, phase: str, split: str = "train", seed: int = 0) -> Dataset:
    """The people a phase learns from at this site: everyone with an ECG (pretrain), with ECG-CMR pairs
    (generator), with labels (finetune); one item per person (one of their windows at random), so DP's unit is
    the patient. Its size sets the DP sample rate."""
    dataset = SiteDataset(site, split, per_subject=True, seed=seed)
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
    for name, rounds, epochs, share in parse_plan_text(plan_text):
        samples = len(phase_dataset(site, name))
        rate, per_epoch = _steps_per_epoch(samples, batch_size)
        phases.append(PlannedPhase(name, rate, rounds * epochs * per_epoch, share))
    return phases


@contextlib.contextmanager
def open_ledger(config: SiteConfig, *, locked: bool = False) -> Iterator[PrivacyLedger]:
    """The site's verified lifetime ledger (both copies), under the file lock when it will be written."""
    kwargs = dict(site_id=config.site_id, target_epsilon=config.privacy.target_epsilon,
                  target_delta=config.privacy.target_delta, copy_path=config.ledger_copy_path)
    if locked:
        with locked_ledger(config.ledger_path, **kwargs) as ledger:
            yield ledger
    else:
        yield PrivacyLedger.open(config.ledger_path, **kwargs)


class Declined(Exception):
    """This site will not train this round; the message is its reason, sent to the lab."""


def train_round(site_config: str | Path, global_state: dict[str, np.ndarray], rc: RoundConfig) -> tuple[list[np.ndarray], dict]:
    """-> (the encoded update as it travels, protocol/codec.py; aggregate metrics)."""
    started = time.perf_counter()
    config, site = _site(str(site_config), rc.preset)
    metrics: dict = {K.SITE: config.site_id, K.PHASE: rc.phase, K.ROUND: rc.server_round, K.DECLINED: 0, K.REASON: ""}
    try:
        update = _train(config, site, global_state, rc, metrics, started)
    except Declined as why:
        metrics.update({K.DECLINED: 1, K.REASON: str(why), K.EXAMPLES: 0})
        update = encode_update(global_state, {}, rc.max_site_examples)
    return update, plain(metrics)


def admission(site_config: str | Path, rc: RoundConfig) -> tuple[str | None, list[str], float | None]:
    """This site's answer to the lab's admission query before a training round (protocol/round_admission.py):
    (why it declines or None, the top-level parts it would train, its lifetime ε). Nothing is trained or spent;
    a decline is written to the ledger as the training call would write it."""
    config, site = _site(str(site_config), rc.preset)
    reason = policy_refusal(rc, config)
    data = phase_dataset(site, rc.phase, seed=rc.seed + rc.server_round)
    distributed = rc.dp and rc.dp_mode == "distributed"
    options = TrainOptions(phase=rc.phase, finetune_mode=rc.finetune_mode, alignment="public-bank" if rc.dp else "infonce")
    has_cmr = site_has_cmr(site) or distributed
    trainable = trainable_parts(options, has_cmr=has_cmr, model=build_model(rc.preset)) if len(data) or distributed else set()
    parts = top_level_parts({name for name in trainable if name.split(".")[0] not in frozen(rc)})
    epsilon = None
    if rc.dp and not reason:
        try:
            with open_ledger(config, locked=True) as ledger:
                if distributed:
                    rate = _steps_per_epoch(len(data), rc.dp_batch)[0]
                    reason = ledger.check(rate, 1, sigma=rc.noise_multiplier) if len(data) else None
                elif parts:
                    reason = _affordable(ledger, site, rc, len(data), config.training.batch_size)
                if reason:
                    ledger.record_decline(study=rc.study, phase=rc.phase, server_round=rc.server_round, reason=reason)
                epsilon = ledger.epsilon
        except LedgerTampered as err:
            reason = f"privacy ledger not trusted: {err}"
    return reason, sorted(parts) if not reason else [], epsilon


def _affordable(ledger: PrivacyLedger, site: PreparedSite, rc: RoundConfig, samples: int, batch: int) -> str | None:
    """Why this site cannot pay for the round under its lifetime budget (local DP-SGD), or None."""
    try:
        sigma = ledger.plan(_plan(site, rc.plan, batch), rc.phase)
    except ValueError as err:  # e.g. no noise multiplier reaches the budget for this plan
        return f"this site's budget cannot pay for the study's plan: {err}"
    rate, per_epoch = _steps_per_epoch(samples, batch)
    return ledger.check(rate, per_epoch * rc.local_epochs, sigma=sigma)


def frozen(rc: RoundConfig) -> set[str]:
    """The parts the lab froze for this round (too few sites would train them: protocol/round_admission.py)."""
    return {p for p in rc.frozen_parts.split(",") if p}


def _train(config: SiteConfig, site: PreparedSite, global_state: dict[str, np.ndarray], rc: RoundConfig, metrics: dict,
           started: float) -> list[np.ndarray]:
    """One phase of the one training loop at this site; fills `metrics`, raises Declined."""
    if (refusal := policy_refusal(rc, config)):
        raise Declined(refusal)
    data = phase_dataset(site, rc.phase, seed=rc.seed + rc.server_round)
    has_cmr = site_has_cmr(site)
    model = _model(rc.preset, global_state)
    options = TrainOptions(phase=rc.phase, epochs=rc.local_epochs, lr=rc.lr, proximal_mu=rc.proximal_mu,
                           finetune_mode=rc.finetune_mode, alignment="public-bank" if rc.dp else "infonce",
                           seed=rc.seed + rc.server_round, device=config.training.device)
    distributed = rc.dp and rc.dp_mode == "distributed"
    if distributed:  # one linear noisy step (client/distributed_dp.py); every site sends every part of the phase
        options = dataclasses.replace(options, max_steps=1, optimizer="sgd", proximal_mu=0.0)
        has_cmr = True  # a site without pairs still adds its noise share to the CMR-side parts
    trainable = {name for name in (trainable_parts(options, has_cmr=has_cmr, model=model) if len(data) or distributed else set())
                 if name.split(".")[0] not in frozen(rc)}
    parts = top_level_parts(trainable)
    if not parts:
        metrics.update({K.EXAMPLES: 0, K.REASON: f"nothing to train in {rc.phase} at this site"})
        return encode_update(global_state, {}, rc.max_site_examples)
    pos_weight = reference_pos_weight() if rc.phase == "finetune" else None
    bank = _public_bank(rc) if options.alignment == "public-bank" and rc.phase == "pretrain" and has_cmr else None
    # The data order is reproducible from the server's seed; DP's noise and sampling are not (client/privacy.py).
    loader = DataLoader(data, batch_size=rc.dp_batch if distributed else config.training.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(rc.seed + rc.server_round))

    def train(privatize=None):
        metrics[K.PREPARE_S] = time.perf_counter() - started
        return train_phase(model, loader, options, has_cmr=has_cmr, pos_weight=pos_weight, public_bank=bank,
                           privatize=privatize)

    release = _loss_release(config, rc, PhaseObjective(model, options, pos_weight, bank), data, metrics)
    # Without DP only where the site's policy allows it (policy_refusal above).
    if distributed:
        result = _train_distributed_share(config, rc, len(data), metrics, train, release, model, trainable)
    else:
        result = _train_under_dp(config, site, rc, len(data), metrics, train, release) if rc.dp else train()
    metrics.update({K.EXAMPLES: len(data), K.STEPS: result.steps, K.SECONDS: result.seconds})
    if not rc.dp:  # without DP nothing of the round is protected; under DP the exact loss stays here
        metrics[K.LOSS] = result.mean_loss
    if rc.phase == "finetune":  # the site's own model of this round: kept on site for its row of the cross-site matrix
        save_checkpoint(local_model_path(config), model, phase="finetune-local", step=rc.server_round)
    # distributed: weight 1 on every part at every site, so the mean is the sum of the shares over their count
    examples = {p: rc.max_site_examples for p in parts} if distributed else part_examples(data, parts)
    update = encode_update(numpy_state(model), examples, rc.max_site_examples)
    # Checked here too: under SecAgg+ the server sees only the sum, so a broken update must not be masked in.
    problem = update_problem(update, global_state, rc.max_update_ratio)
    if problem:
        raise Declined(f"this site's own update failed its checks ({problem}); not sent")
    return update


def _loss_release(config: SiteConfig, rc: RoundConfig, objective: PhaseObjective, data: Dataset, metrics: dict):
    """ledger -> None: the round's loss, noised, within the budget (client/loss_release.py), into `metrics`."""
    def release(ledger) -> None:
        from client.loss_release import release_loss

        device = resolve_device(objective.options.device)
        if objective.public_bank is not None:
            objective.public_bank = objective.public_bank.to(device)
        value = release_loss(ledger, objective.to(device), data, noise_multiplier=config.privacy.loss_noise_multiplier,
                             bound=config.privacy.loss_bound, device=device, study=rc.study, phase=rc.phase,
                             server_round=rc.server_round)
        if value is not None:
            metrics[K.DP_LOSS], metrics[K.EPSILON] = value, ledger.epsilon
    return release


def _public_bank(rc: RoundConfig) -> PublicBank:
    """The round's public alignment bank; a DP pretrain round without a valid one is declined."""
    if not rc.public_bank:
        raise Declined("a DP pretrain round must carry the public alignment bank; this one has none")
    try:
        ecg, cmr = decode_bank(rc.public_bank)
    except ValueError as err:
        raise Declined(str(err)) from None
    return PublicBank(torch.from_numpy(ecg), torch.from_numpy(cmr))


def _train_distributed_share(config: SiteConfig, rc: RoundConfig, samples: int, metrics: dict, train, release,
                             model: CardiacNets, trainable: set[str]) -> TrainResult:
    """This site's share of one distributed-DP step (client/distributed_dp.py), within its lifetime budget: the
    ledger accounts the step at the study's σ, the noise the SecAgg+ sum carries."""
    from client.distributed_dp import add_noise_share_only, noise_share

    if rc.secagg_threshold < 2:
        raise Declined("distributed DP needs SecAgg+ (a threshold of at least 2 sites); this round came without it")
    sigma, clip = rc.noise_multiplier, config.privacy.max_grad_norm
    share = noise_share(sigma, rc.secagg_threshold)
    rate = _steps_per_epoch(samples, rc.dp_batch)[0]
    metrics.update({K.NOISE_MULTIPLIER: sigma, K.NOISE_SHARES: rc.secagg_threshold, K.MAX_GRAD_NORM: clip,
                    K.DELTA: config.privacy.target_delta, K.TARGET_EPSILON: config.privacy.target_epsilon,
                    K.SAMPLE_RATE: rate})
    try:
        with open_ledger(config, locked=True) as ledger:
            reason = ledger.check(rate, 1, sigma=sigma) if samples else None
            if reason:
                ledger.record_decline(study=rc.study, phase=rc.phase, server_round=rc.server_round, reason=reason)
                metrics[K.EPSILON] = ledger.epsilon
                raise Declined(reason)
            if not samples:  # no patients here for this phase: the share of noise only, nothing spent
                model.to("cpu")
                add_noise_share_only(set_trainable(model, trainable), share=share, max_grad_norm=clip, lr=rc.lr, batch=rc.dp_batch)
                metrics[K.EPSILON] = ledger.epsilon
                return TrainResult(steps=1, examples=0, mean_loss=float("nan"), seconds=0.0)
            from client.privacy import OpacusPrivatizer

            privatizer = OpacusPrivatizer(noise_multiplier=share, max_grad_norm=clip, expected_batch_size=rc.dp_batch)
            result = train(privatizer)
            privatizer.close()
            metrics[K.EPSILON] = ledger.record(ledger.history + [[sigma, rate, 1]], study=rc.study, phase=rc.phase,
                                               server_round=rc.server_round, steps=1)
            release(ledger)
            return result
    except LedgerTampered as err:
        raise Declined(f"privacy ledger not trusted: {err}") from None


def _train_under_dp(config: SiteConfig, site: PreparedSite, rc: RoundConfig, samples: int, metrics: dict, train, release):
    """DP-SGD within the site's lifetime budget: the ledger is held from the budget check to the record."""
    batch = config.training.batch_size
    try:
        with open_ledger(config, locked=True) as ledger:
            try:
                sigma = ledger.plan(_plan(site, rc.plan, batch), rc.phase)
            except ValueError as err:  # the admission query declines this first; a decline, never a failed round
                raise Declined(f"this site's budget cannot pay for the study's plan: {err}") from None
            rate, per_epoch = _steps_per_epoch(samples, batch)
            metrics.update({K.NOISE_MULTIPLIER: sigma, K.MAX_GRAD_NORM: config.privacy.max_grad_norm,
                            K.DELTA: config.privacy.target_delta, K.TARGET_EPSILON: config.privacy.target_epsilon,
                            K.SAMPLE_RATE: rate})
            reason = ledger.check(rate, per_epoch * rc.local_epochs, sigma=sigma)
            if reason:
                ledger.record_decline(study=rc.study, phase=rc.phase, server_round=rc.server_round, reason=reason)
                metrics[K.EPSILON] = ledger.epsilon
                raise Declined(reason)
            from client.privacy import OpacusPrivatizer  # Opacus costs ~1 s to import: only when DP is on

            privatizer = OpacusPrivatizer(noise_multiplier=sigma, max_grad_norm=config.privacy.max_grad_norm,
                                          history=ledger.history)
            result = train(privatizer)
            privatizer.close()
            metrics[K.EPSILON] = ledger.record(privatizer.history, study=rc.study, phase=rc.phase,
                                               server_round=rc.server_round, steps=result.steps)
            release(ledger)
            return result
    except LedgerTampered as err:
        raise Declined(f"privacy ledger not trusted: {err}. This site will not train until an operator restores "
                       "a copy or runs `cardiacfl site ledger reset --reason ...`") from None


def work(op: str, site_config: str | Path, packed_global: list[np.ndarray], rc: RoundConfig):
    """One message's work from the global weights as they travel (protocol/codec.py): 'train' or 'evaluate'.
    The ClientApp calls it in its own process, or the site's warm worker does (client/site_worker.py)."""
    global_state = unpack_state(packed_global, rc.preset)
    return {"train": train_round, "evaluate": evaluate_round}[op](site_config, global_state, rc)


def overlap(site_config: str | Path, fingerprints: dict[str, list[str]]) -> dict[str, int]:
    """How many of the lab's panel and public ECG fingerprints are among this site's records (counts only)."""
    from sitedata.fingerprints import overlap_counts, site_fingerprints

    return overlap_counts(site_fingerprints(prepare_site(load_site_config(str(site_config)))), fingerprints)


def local_model_path(config: SiteConfig) -> Path:
    """The site's model after its last fine-tuning round: it never leaves the site."""
    return config.cache_dir / "local-model" / "finetune.pt"


def releasable_scores(model: CardiacNets, config: SiteConfig, validation: SiteDataset, rc: RoundConfig) -> dict[str, float]:
    """A model's metrics on the site's validation split, only those the release rule lets leave the site."""
    result = evaluate(model, DataLoader(validation, batch_size=64), rc.phase, device=config.training.device, seed=rc.seed)
    return releasable(result, validation.subjects, config.privacy.min_eval_count)


def local_model_scores(config: SiteConfig, validation: SiteDataset, rc: RoundConfig) -> dict[str, float]:
    """The site's own fine-tuned model on its own validation split, as `local/<metric>` (the model is never sent)."""
    result = releasable_scores(load_checkpoint(local_model_path(config))[0], config, validation, rc)
    if result.get(K.WITHHELD):
        return {}
    return {local_key(k): float(result[k]) for k in (K.LOSS, K.MEAN_AUROC, K.MEAN_R2) if k in result}


def evaluate_round(site_config: str | Path, global_state: dict[str, np.ndarray], rc: RoundConfig) -> tuple[float, int, dict]:
    """Score the global model on the site's validation split -> (loss, examples, aggregate metrics)."""
    config, site = _site(str(site_config), rc.preset)
    model = _model(rc.preset, global_state)
    validation = SiteDataset(site, "val")
    result = releasable_scores(model, config, validation, rc)
    if result.get(K.WITHHELD):  # below the release floor: no loss, no exact count (Flower's loss slot says 0)
        return 0.0, 0, plain(result | {K.SITE: config.site_id, K.PHASE: rc.phase})
    examples = int(result.pop(K.NUM_EXAMPLES))
    loss = result[K.LOSS]
    metrics = {k: float(v) for k, v in result.items()} | {K.SITE: config.site_id, K.PHASE: rc.phase}
    if rc.phase == "finetune" and local_model_path(config).is_file():
        metrics |= local_model_scores(config, validation, rc)
    if config.ledger_path.is_file():
        try:
            with open_ledger(config) as ledger:
                metrics[K.EPSILON] = ledger.epsilon
        except LedgerTampered:
            pass  # training rounds decline with the reason; evaluation just leaves ε out
    return (loss if math.isfinite(loss) else 0.0), examples, plain(metrics)
