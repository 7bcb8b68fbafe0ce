"""CardiacNets: ECG encoder (+ masked-modelling decoder), CMR encoder (+ its masked decoder), ECG-CMR
projections, the ECG-conditioned CMR generator and the ECG-only heads, built by the one `build_model` that
the server, the clients, `predict` and the dashboard share.

Every loss here returns one value per sample (B,) where it can, because DP-SGD clips per sample; the
training loop takes their mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shared_models.cmr_encoder import CmrEncoder, build_cmr_decoder, masked_cmr_loss
from shared_models.config import CardiacNetsConfig, preset
from shared_models.ecg_encoder import EcgEncoder, build_ecg_decoder, masked_ecg_loss
from shared_models.generator import CmrGenerator
from shared_models.targets import DISEASE_REFERENCE_PREVALENCE, DISEASES


def info_nce(ecg_embedding: torch.Tensor, cmr_embedding: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric CLIP loss: the i-th ECG and the i-th CMR are the positive pair, the rest negatives."""
    ecg = F.normalize(ecg_embedding, dim=-1)
    cmr = F.normalize(cmr_embedding, dim=-1)
    logits = ecg @ cmr.T / temperature  # (B, B)
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


class CardiacNets(nn.Module):
    def __init__(self, config: CardiacNetsConfig):
        super().__init__()
        self.config = config
        self.ecg_encoder = EcgEncoder(config.ecg)
        self.ecg_decoder = build_ecg_decoder(config.ecg)
        self.cmr_encoder = CmrEncoder(config.cmr)
        self.cmr_decoder = build_cmr_decoder(config.cmr)
        self.ecg_projection = nn.Linear(config.ecg.dim, config.align.embed_dim)
        self.cmr_projection = nn.Linear(config.cmr.dim, config.align.embed_dim)
        self.generator = CmrGenerator(config.generator, config.cmr, config.ecg.dim)
        hidden = config.heads.hidden
        self.indicator_head = _head(config.ecg.dim, hidden, config.heads.n_indicators)
        self.disease_head = _head(config.ecg.dim, hidden, config.heads.n_diseases)
        self.apply(_init_embeddings)
        _init_heads(self.indicator_head, self.disease_head)

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
        samples of a batch, so it is for training without DP; see `distillation_loss`."""
        paired = batch["has_cmr"]
        if int(paired.sum()) < 2:
            return batch["ecg"].new_zeros(())
        subset = {k: v[paired] for k, v in batch.items() if torch.is_tensor(v)}
        return info_nce(self.ecg_embedding(subset), self.cmr_embedding(subset["cmr"]), self.config.align.temperature)

    def distillation_loss(self, batch: dict) -> torch.Tensor:
        """Per-sample (B,) alignment for DP-SGD: 1 - cosine between a sample's ECG embedding and its own
        CMR embedding from the frozen CMR side (trained by InfoNCE on non-private pairs; a CMR side trained
        here could shrink to a constant that every ECG matches, and did). Each term depends on one sample
        only, so per-sample clipping bounds its influence. 0 without CMR."""
        with torch.no_grad():  # a target only; no_grad also keeps Opacus from recording this second CMR pass
            target = self.cmr_embedding(batch["cmr"])
        cosine = F.cosine_similarity(self.ecg_embedding(batch), target, dim=-1)
        return (1 - cosine) * batch["has_cmr"].float()

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

