"""CardiacNets: ECG encoder (+ masked-modelling decoder), CMR encoder (+ its masked decoder), ECG-CMR
projections, the ECG-conditioned CMR generator and the ECG-only heads, built by the one `build_model` that
the server, the clients, `predict` and the dashboard share.

Every loss here returns one value per sample (B,) where it can, because DP-SGD clips per sample; the
training loop takes their mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from shared_models.cmr_encoder import CmrEncoder, build_cmr_decoder, masked_cmr_loss
from shared_models.config import CardiacNetsConfig, preset
from shared_models.ecg_encoder import EcgEncoder, build_ecg_decoder, masked_ecg_loss
from shared_models.generator import CmrGenerator
from shared_models.targets import DISEASE_REFERENCE_PREVALENCE, DISEASES


@dataclass(frozen=True)
class PublicBank:
    """Unit embeddings (M, embed_dim) of the lab's public pairs under the round's global model: the negatives of
    `CardiacNets.public_bank_loss`."""

    ecg: torch.Tensor
    cmr: torch.Tensor

    def to(self, device: torch.device) -> "PublicBank":
        return PublicBank(self.ecg.to(device), self.cmr.to(device))


def info_nce(ecg_embedding: torch.Tensor, cmr_embedding: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric CLIP loss: the i-th ECG and the i-th CMR are the positive pair, the rest negatives."""
    ecg = F.normalize(ecg_embedding, dim=-1)
    cmr = F.normalize(cmr_embedding, dim=-1)
    logits = ecg @ cmr.T / temperature  # (B, B)
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


class Projection(nn.Module):
    """Linear map into the shared ECG-CMR space, each dimension then standardised. Pooled features of quasi-periodic
    ECGs and of localised cine clips share a large common part (pairwise cosine 0.97-0.99 at init), so raw
    embeddings all point one way, InfoNCE's gradient is nearly nil and training collapsed them to one point.
    Standardising removes the common part (BatchNorm's role in contrastive heads), but batch statistics couple the
    samples of a batch: they are used only where `learn_statistics` is set (InfoNCE on the lab's public pairs, no DP),
    which also updates the running statistics; everywhere else (evaluation, DP-SGD at a site) the running statistics
    are a constant, so each sample's embedding depends on that sample alone."""

    def __init__(self, dim_in: int, dim_out: int, momentum: float = 0.05):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)
        self.register_buffer("running_mean", torch.zeros(dim_out))
        self.register_buffer("running_var", torch.ones(dim_out))
        self.momentum = momentum
        self.learn_statistics = False

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        y = self.linear(features)
        if self.learn_statistics and self.training and len(y) > 1:
            mean, var = y.mean(0), y.var(0, unbiased=False)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach().float(), self.momentum)
                self.running_var.lerp_(var.detach().float(), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return (y - mean) / torch.sqrt(var + 1e-5)


class CardiacNets(nn.Module):
    def __init__(self, config: CardiacNetsConfig):
        super().__init__()
        self.config = config
        self.ecg_encoder = EcgEncoder(config.ecg)
        self.ecg_decoder = build_ecg_decoder(config.ecg)
        self.cmr_encoder = CmrEncoder(config.cmr)
        self.cmr_decoder = build_cmr_decoder(config.cmr)
        self.ecg_projection = Projection(config.ecg.dim, config.align.embed_dim)
        self.cmr_projection = Projection(config.cmr.dim, config.align.embed_dim)
        self.generator = CmrGenerator(config.generator, config.cmr, config.ecg.dim)
        hidden = config.heads.hidden
        self.indicator_head = _head(config.ecg.dim, hidden, config.heads.n_indicators)
        self.disease_head = _head(config.ecg.dim, hidden, config.heads.n_diseases)
        self.apply(_init_embeddings)
        _init_heads(self.indicator_head, self.disease_head)

    def learn_embedding_statistics(self, enabled: bool) -> None:
        """Batch statistics in the projections (InfoNCE without DP only); see `Projection`."""
        self.ecg_projection.learn_statistics = self.cmr_projection.learn_statistics = enabled

    # representations -------------------------------------------------------------------------------
    def ecg_tokens(self, batch: dict) -> torch.Tensor:
        """(B, prefix + tokens, ecg.dim): everything the ECG encoder says about the record."""
        return self.ecg_encoder(batch["ecg"], batch["lead_mask"], batch.get("demographics"), batch.get("demographics_mask"))

    def ecg_features(self, batch: dict) -> torch.Tensor:
        """(B, ecg.dim) pooled ECG representation: class token plus the mean of the patch tokens (the mean
        differs between records from the first step, where a class token alone starts out nearly constant)."""
        tokens = self.ecg_tokens(batch)
        return tokens[:, 0] + tokens[:, self.ecg_encoder.n_prefix:].mean(1)

    def ecg_embedding(self, batch: dict) -> torch.Tensor:
        return self.ecg_projection(self.ecg_features(batch))

    def cmr_embedding(self, clip: torch.Tensor) -> torch.Tensor:
        tokens = self.cmr_encoder(clip)
        return self.cmr_projection(tokens[:, 0] + tokens[:, 1:].mean(1))

    # losses ----------------------------------------------------------------------------------------
    def masked_ecg_loss(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-sample (B,) masked-ECG loss."""
        return masked_ecg_loss(self.ecg_encoder, self.ecg_decoder, batch, generator)

    def contrastive_loss(self, batch: dict) -> torch.Tensor:
        """InfoNCE over the paired samples of the batch (ECG-only samples take no part). It couples the
        samples of a batch, so it is for training without DP; see `public_bank_loss`."""
        paired = batch["has_cmr"]
        if int(paired.sum()) < 2:
            return batch["ecg"].new_zeros(())
        subset = {k: v[paired] for k, v in batch.items() if torch.is_tensor(v)}
        return info_nce(self.ecg_embedding(subset), self.cmr_embedding(subset["cmr"]), self.config.align.temperature)

    def public_bank_loss(self, batch: dict, bank: "PublicBank") -> torch.Tensor:
        """Per-sample (B,) InfoNCE of each private pair against a bank of the lab's public pairs, both ways:
        the sample's ECG must pick its own CMR among the public CMRs, and its CMR its own ECG among the public
        ECGs. No term involves another private sample, so per-sample clipping bounds each pair's influence
        (batch InfoNCE cannot be used under DP-SGD), and both towers learn from the site's pairs. The bank is
        public (embeddings of the lab's own pairs, sent with the round), so DP holds. 0 without CMR."""
        temperature = self.config.align.temperature
        ecg = F.normalize(self.ecg_embedding(batch), dim=-1)
        cmr = F.normalize(self.cmr_embedding(batch["cmr"]), dim=-1)
        positive = (ecg * cmr).sum(-1, keepdim=True) / temperature  # (B, 1)
        ecg_to_cmr = torch.cat([positive, ecg @ bank.cmr.T / temperature], dim=1)  # own CMR is class 0
        cmr_to_ecg = torch.cat([positive, cmr @ bank.ecg.T / temperature], dim=1)
        loss = (torch.logsumexp(ecg_to_cmr, 1) + torch.logsumexp(cmr_to_ecg, 1)) / 2 - positive.squeeze(1)
        return loss * batch["has_cmr"].float()

    def masked_cmr_loss(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-sample (B,) masked CMR modelling loss; 0 for samples without CMR."""
        return masked_cmr_loss(self.cmr_encoder, self.cmr_decoder, batch["cmr"], generator) * batch["has_cmr"].float()

    def generator_loss(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-sample (B,) diffusion loss; the ECG encoder is the (frozen) condition; 0 without CMR."""
        condition = self.ecg_tokens(batch).detach()
        return self.generator.loss(batch["cmr"], condition, generator) * batch["has_cmr"].float()

    def heads(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(standardised indicator predictions (B, 9), disease logits (B, 5))."""
        features = self.ecg_features(batch)
        return self.indicator_head(features), self.disease_head(features)

    def paired_unit_embeddings(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(ECG, CMR) unit embeddings of the batch's paired samples, or None where it has none."""
        paired = batch["has_cmr"]
        if not paired.any():
            return None
        subset = {k: v[paired] for k, v in batch.items() if torch.is_tensor(v)}
        return F.normalize(self.ecg_embedding(subset), dim=-1), F.normalize(self.cmr_embedding(subset["cmr"]), dim=-1)

    @torch.no_grad()
    def public_bank(self, loader) -> PublicBank:
        """The bank of `public_bank_loss` from the paired samples of `loader` (the lab's public data)."""
        was_training = self.training
        self.eval()
        ecg, cmr = [], []
        for batch in loader:
            if (pair := self.paired_unit_embeddings(batch)) is not None:
                ecg.append(pair[0])
                cmr.append(pair[1])
        self.train(was_training)
        if not ecg:
            raise ValueError("public data: no ECG-CMR pairs for the alignment bank")
        return PublicBank(torch.cat(ecg), torch.cat(cmr))

    @torch.no_grad()
    def generate(self, batch: dict, *, steps: int | None = None, guidance: float | None = None,
                 temperature: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """ECG -> CMR cine clips (B, frames, H, W) in [0, 1]."""
        return self.generator.sample(self.ecg_tokens(batch), steps=steps, guidance=guidance, temperature=temperature,
                                     generator=generator)


def _init_embeddings(module: nn.Module) -> None:
    # ViT/GPT practice: small position/lead embeddings, so the signal dominates the tokens at the start
    # (torch's default N(0, 1) drowns the patch content and every record starts out looking the same).
    if isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)


def _init_heads(indicator_head: nn.Module, disease_head: nn.Module) -> None:
    """Heads start at the prior: standardised indicators at the reference mean (0), diseases at the reference
    prevalence, the same for every record. Random heads ranked records by an arbitrary direction of the
    features from the start, and a few noisy DP steps did not undo it (AUROCs far below 0.5 at init)."""
    indicator_out, disease_out = _last_linear(indicator_head), _last_linear(disease_head)
    for layer in (indicator_out, disease_out):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    prior = torch.tensor([DISEASE_REFERENCE_PREVALENCE[name] for name in DISEASES])
    with torch.no_grad():
        disease_out.bias.copy_(torch.log(prior / (1 - prior)))


def _last_linear(head: nn.Module) -> nn.Linear:
    return head if isinstance(head, nn.Linear) else head[-1]


def _head(dim: int, hidden: int, out: int) -> nn.Module:
    if hidden <= 0:
        return nn.Linear(dim, out)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out))


def build_model(config: CardiacNetsConfig | str) -> CardiacNets:
    """The one constructor every component uses, from a config or a preset name."""
    return CardiacNets(preset(config) if isinstance(config, str) else config)

