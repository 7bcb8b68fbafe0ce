"""The one training loop: the centralized reference trainer calls it over the pooled cohort, and a federated
site calls it once per round over its own data. It knows nothing of Flower or Opacus: DP enters through the
`privatize` seam (a function that wraps objective, optimizer and loader, as Opacus' `make_private` does) and
FedProx through `proximal_mu` plus the global weights of the round.

Phases and what they train:
- pretrain:  masked ECG modelling + ECG-CMR alignment. `alignment="infonce"` (no DP: the lab's public data,
             centralized runs) trains both sides: ECG encoder/decoder, projections, and the CMR encoder by
             masked CMR modelling plus the contrastive loss. `alignment="public-bank"` (DP at a site) trains
             both sides too, with each private pair's InfoNCE taken against a bank of the lab's public pairs
             (per-sample, so DP-SGD bounds it; `CardiacNets.public_bank_loss`). Sites without CMR train the
             ECG encoder/decoder only.
- generator: the ECG-conditioned CMR diffusion model; the ECG encoder is its frozen condition.
- finetune:  the indicator and disease heads, plus the whole ECG encoder (`finetune_mode="full"`), its last
             transformer block and final norm only ("last-block": parameter-efficient DP, where fewer noisy
             coordinates give each one more signal), or none of it ("linear").
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from shared_models.cardiacnets import CardiacNets, PublicBank
from shared_models.targets import DISEASE_REFERENCE_PREVALENCE, DISEASES, INDICATOR_REFERENCE, INDICATORS

PHASES = ("pretrain", "generator", "finetune")
# Top-level model parts that learn only from ECG-CMR pairs: a site weights their update by its pairs, not its ECGs.
PAIRED_PARTS = frozenset({"cmr_encoder", "cmr_decoder", "cmr_projection", "ecg_projection", "generator"})
ALIGNMENTS = ("infonce", "public-bank")
FINETUNE_MODES = ("full", "last-block", "linear")


@dataclass
class TrainOptions:
    phase: str
    epochs: int = 1
    lr: float = 1e-3
    weight_decay: float = 1e-4
    finetune_mode: str = "full"  # full: encoder + heads; last-block: its last block + heads; linear: heads only
    alignment: str = "infonce"  # infonce: CLIP loss (couples a batch, so not under DP); public-bank: per-sample
    alignment_weight: float = 1.0
    proximal_mu: float = 0.0  # FedProx: pull towards the round's global weights (0: off)
    max_steps: int = 0  # stop after this many optimizer steps (0: run the epochs)
    # adamw; sgd: a linear step, for distributed DP, where the sites' noisy steps must add up (client/distributed_dp.py)
    optimizer: str = "adamw"
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        if self.phase not in PHASES:
            raise ValueError(f"phase {self.phase!r}: expected one of {', '.join(PHASES)}")
        if self.alignment not in ALIGNMENTS:
            raise ValueError(f"alignment {self.alignment!r}: expected one of {', '.join(ALIGNMENTS)}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer {self.optimizer!r}: expected adamw or sgd")
        if self.finetune_mode not in FINETUNE_MODES:
            raise ValueError(f"finetune_mode {self.finetune_mode!r}: expected one of {', '.join(FINETUNE_MODES)}")


@dataclass
class TrainResult:
    steps: int
    examples: int  # samples per epoch whose data entered this phase's loss
    mean_loss: float
    seconds: float


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def trainable_parts(options: TrainOptions, *, has_cmr: bool, model: CardiacNets | None = None) -> set[str]:
    """What one phase trains on a site (with or without CMR): top-level parts ("ecg_encoder"), or for
    `finetune_mode="last-block"` a part's sub-modules by name prefix ("ecg_encoder.transformer.blocks.2");
    `model` gives the depth (the preset's)."""
    if options.phase == "pretrain":
        parts = {"ecg_encoder", "ecg_decoder"}
        if has_cmr:
            parts |= {"ecg_projection", "cmr_encoder", "cmr_decoder", "cmr_projection"}
        return parts
    if options.phase == "generator":
        return {"generator"} if has_cmr else set()
    heads = {"indicator_head", "disease_head"}
    if options.finetune_mode == "last-block":
        depth = len(model.ecg_encoder.transformer.blocks) if model is not None else 1
        return heads | {f"ecg_encoder.transformer.blocks.{depth - 1}", "ecg_encoder.transformer.norm"}
    return heads if options.finetune_mode == "linear" else heads | {"ecg_encoder"}


def top_level_parts(parts: set[str]) -> set[str]:
    """The model parts (codec weights) that `trainable_parts`' names belong to."""
    return {name.split(".", 1)[0] for name in parts}


def set_trainable(model: nn.Module, parts: set[str]) -> list[nn.Parameter]:
    for name, parameter in model.named_parameters():
        parameter.requires_grad = any(name == part or name.startswith(part + ".") for part in parts)
    return [p for p in model.parameters() if p.requires_grad]


def standardise_indicators(values: torch.Tensor) -> torch.Tensor:
    mean, std = _reference(values)
    return (values - mean) / std


def unstandardise_indicators(values: torch.Tensor) -> torch.Tensor:
    mean, std = _reference(values)
    return values * std + mean


def _reference(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    table = torch.tensor([INDICATOR_REFERENCE[name] for name in INDICATORS], dtype=like.dtype, device=like.device)
    return table[:, 0], table[:, 1]


def reference_pos_weight() -> torch.Tensor:
    """negatives / positives per disease at the reference prevalence: the class weighting every site uses. A
    weight fitted to a site's own labels would make each patient's loss depend on every other patient's label,
    which per-sample clipping does not bound."""
    prior = torch.tensor([DISEASE_REFERENCE_PREVALENCE[name] for name in DISEASES])
    return (1 - prior) / prior


def finetune_losses(model: CardiacNets, batch: dict, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample (B,) supervised loss of the heads on a batch."""
    indicators, logits = model.heads(batch)
    return supervised_loss(indicators, logits, batch, pos_weight)


def supervised_loss(indicators: torch.Tensor, logits: torch.Tensor, batch: dict, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample (B,): MSE on standardised indicators plus BCE on diseases, each averaged over the labels
    the sample has (unlabelled targets count for nothing)."""
    target = standardise_indicators(batch["indicators"])
    ind_mask, dis_mask = batch["indicator_mask"].float(), batch["disease_mask"].float()
    mse = ((indicators - target) ** 2 * ind_mask).sum(1) / ind_mask.sum(1).clamp(min=1)
    bce = F.binary_cross_entropy_with_logits(logits, batch["diseases"], pos_weight=pos_weight, reduction="none")
    return mse + (bce * dis_mask).sum(1) / dis_mask.sum(1).clamp(min=1)


class PhaseObjective(nn.Module):
    """One phase's trainable computation behind forward(batch) -> scalar loss, a mean of per-sample terms:
    the module a DP wrapper (Opacus' GradSampleModule) wraps."""

    def __init__(self, model: CardiacNets, options: TrainOptions, pos_weight: torch.Tensor | None = None,
                 public_bank: PublicBank | None = None):
        super().__init__()
        self.model, self.options, self.public_bank = model, options, public_bank
        self.register_buffer("pos_weight", pos_weight, persistent=False)

    def per_sample(self, batch: dict) -> torch.Tensor:
        """Each sample's own term of the loss, (B,): the phase's loss is their mean. Not for InfoNCE, whose terms
        each depend on the whole batch."""
        model, options = self.model, self.options
        if options.phase == "generator":
            return model.generator_loss(batch)
        if options.phase == "finetune":
            return finetune_losses(model, batch, self.pos_weight)
        if options.alignment == "infonce":
            raise ValueError("InfoNCE has no per-sample loss: each term depends on the whole batch")
        loss = model.masked_ecg_loss(batch) + model.masked_cmr_loss(batch)
        if self.public_bank is None:  # a site without pairs: its alignment term is 0
            return loss
        return loss + options.alignment_weight * model.public_bank_loss(batch, self.public_bank)

    def forward(self, batch: dict) -> torch.Tensor:
        model, options = self.model, self.options
        if options.phase == "generator":
            return _mean(model.generator_loss(batch))
        if options.phase == "finetune":
            return _mean(finetune_losses(model, batch, self.pos_weight))
        loss = _mean(model.masked_ecg_loss(batch)) + _mean(model.masked_cmr_loss(batch))
        if options.alignment == "infonce":
            return loss + options.alignment_weight * model.contrastive_loss(batch)
        if self.public_bank is None:  # a site without pairs (train_phase allows it only then): the term is 0
            return loss
        return loss + options.alignment_weight * _mean(model.public_bank_loss(batch, self.public_bank))


def _mean(per_sample: torch.Tensor) -> torch.Tensor:
    # An empty Poisson batch (possible under DP) must still give a finite loss.
    return per_sample.sum() / max(len(per_sample), 1)


def contributing(batch: dict, phase: str) -> int:
    """Samples of a batch whose data enter the phase's loss."""
    if phase == "generator":
        return int(batch["has_cmr"].sum())
    if phase == "finetune":
        return int((batch["indicator_mask"].any(1) | batch["disease_mask"].any(1)).sum())
    return len(batch["ecg"])


Privatize = Callable[[nn.Module, torch.optim.Optimizer, Iterable], tuple[nn.Module, torch.optim.Optimizer, Iterable]]


def train_phase(
    model: CardiacNets,
    loader: Iterable,
    options: TrainOptions,
    *,
    has_cmr: bool = True,
    pos_weight: torch.Tensor | None = None,
    public_bank: PublicBank | None = None,
    privatize: Privatize | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """Train one phase for `options.epochs` over `loader` (batches of SiteDataset dicts); the model is
    updated in place. `privatize` wraps (objective, optimizer, loader) for DP-SGD; `public_bank`: the negatives of
    alignment='public-bank'."""
    if privatize is not None and options.phase == "pretrain" and options.alignment == "infonce":
        raise ValueError("InfoNCE couples the samples of a batch, so per-sample clipping does not bound one "
                         "sample's influence: use alignment='public-bank' with DP")
    if options.phase == "pretrain" and options.alignment == "public-bank" and public_bank is None and has_cmr:
        raise ValueError("alignment='public-bank' needs the bank of public pair embeddings sent with the round")
    device = resolve_device(options.device)
    torch.manual_seed(options.seed)
    model.to(device).train()
    model.learn_embedding_statistics(privatize is None and options.phase == "pretrain" and options.alignment == "infonce")
    parameters = set_trainable(model, trainable_parts(options, has_cmr=has_cmr, model=model))
    if not parameters:
        return TrainResult(steps=0, examples=0, mean_loss=float("nan"), seconds=0.0)
    global_weights = [p.detach().clone() for p in parameters] if options.proximal_mu > 0 else None
    objective: nn.Module = PhaseObjective(model, options, None if pos_weight is None else pos_weight.to(device),
                                          None if public_bank is None else public_bank.to(device))
    optimizer: torch.optim.Optimizer = (
        torch.optim.AdamW(parameters, lr=options.lr, weight_decay=options.weight_decay) if options.optimizer == "adamw"
        else torch.optim.SGD(parameters, lr=options.lr))
    if privatize is not None:
        objective, optimizer, loader = privatize(objective, optimizer, loader)

    total = options.max_steps or options.epochs * _length(loader)
    steps, examples, loss_sum, start = 0, 0, 0.0, time.perf_counter()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    while steps < total:
        for batch in loader:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with autocast:
                loss = objective(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if global_weights is not None:
                _proximal_step(parameters, global_weights, options.lr * options.proximal_mu)
            steps += 1
            examples += contributing(batch, options.phase)
            loss_sum += float(loss.detach())
            if progress:
                progress(steps, total, loss_sum / steps)
            if steps >= total:
                break
        else:
            if _length(loader) == 0:  # an empty loader would otherwise loop forever
                break
    model.learn_embedding_statistics(False)
    epochs_run = max(1, math.ceil(steps / max(_length(loader), 1)))
    return TrainResult(steps=steps, examples=examples // epochs_run, mean_loss=loss_sum / max(steps, 1),
                       seconds=time.perf_counter() - start)


@torch.no_grad()
def _proximal_step(parameters: list[nn.Parameter], global_weights: list[torch.Tensor], rate: float) -> None:
    """FedProx's (mu / 2) ||w - w_global||^2 as a decoupled step after the optimizer's: it touches no data,
    so it needs no clipping or noise and works the same with and without DP."""
    for p, g in zip(parameters, global_weights):
        p.sub_(rate * (p - g))


def _length(loader: Iterable) -> int:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return 1

