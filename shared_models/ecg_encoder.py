"""ECG encoder: a ViT over lead x time patches, with masked ECG modelling (MAE-style) for pretraining.

Tokens: every lead is cut into `patch_s` patches; a token holds `leads_per_token` leads of one patch (1 in the
reference design; 12 in the CPU preset, one token per time step). token = Linear(patch) + lead-group embedding +
time embedding + Linear(which of its leads are measured) (a reduced-lead record lacks some). A class token (and optionally an
(age, sex) token) leads the sequence. All embeddings are nn.Embedding/nn.Linear so Opacus' hooks
compute per-sample gradients (a raw nn.Parameter would break its "ew" mode).
"""

from __future__ import annotations

import torch
from torch import nn

from shared_models.config import EcgEncoderConfig
from shared_models.masked_decoder import MaskedDecoder
from shared_models.transformer import Transformer


def patchify(ecg: torch.Tensor, cfg: EcgEncoderConfig) -> torch.Tensor:
    """(B, leads, T) -> (B, n_tokens, token_size): lead-group-major; a token is its leads' samples of one patch."""
    B, L, T = ecg.shape
    expected = cfg.samples_per_patch * cfg.patches_per_lead
    if T != expected or L != cfg.n_leads:
        raise ValueError(f"ECG of shape {tuple(ecg.shape)}; the model expects (B, {cfg.n_leads}, {expected})")
    x = ecg.reshape(B, cfg.lead_groups, cfg.leads_per_token, cfg.patches_per_lead, cfg.samples_per_patch)
    return x.transpose(2, 3).reshape(B, cfg.n_tokens, cfg.token_size)


def token_leads(lead_mask: torch.Tensor, cfg: EcgEncoderConfig) -> torch.Tensor:
    """(B, 12) bool -> (B, n_tokens, leads_per_token) bool: which of each token's leads are measured."""
    groups = lead_mask.reshape(lead_mask.shape[0], cfg.lead_groups, 1, cfg.leads_per_token)
    return groups.expand(-1, -1, cfg.patches_per_lead, -1).reshape(lead_mask.shape[0], cfg.n_tokens, cfg.leads_per_token)


class EcgEncoder(nn.Module):
    def __init__(self, cfg: EcgEncoderConfig):
        super().__init__()
        self.cfg = cfg
        n_tokens = cfg.n_tokens
        self.patch_embed = nn.Linear(cfg.token_size, cfg.dim)
        self.lead_embed = nn.Embedding(cfg.lead_groups, cfg.dim)
        self.time_embed = nn.Embedding(cfg.patches_per_lead, cfg.dim)
        self.presence_embed = nn.Linear(cfg.leads_per_token, cfg.dim)  # which of the token's leads are measured
        # Small like the other embeddings: torch's default Linear init added the same large vector to every
        # token of every full-lead record, and the ECG features barely depended on the ECG (shared part 59x the rest).
        nn.init.normal_(self.presence_embed.weight, std=0.02)
        nn.init.zeros_(self.presence_embed.bias)
        self.cls_embed = nn.Embedding(1, cfg.dim)
        self.demographics = nn.Linear(4, cfg.dim) if cfg.use_demographics else None  # (age/100, sex, 2 masks)
        self.transformer = Transformer(cfg.dim, cfg.depth, cfg.heads, cfg.mlp_ratio)
        token = torch.arange(n_tokens)
        self.register_buffer("lead_index", token // cfg.patches_per_lead, persistent=False)
        self.register_buffer("time_index", token % cfg.patches_per_lead, persistent=False)

    @property
    def n_prefix(self) -> int:
        return 1 + (self.demographics is not None)

    def forward(self, ecg: torch.Tensor, lead_mask: torch.Tensor, demographics: torch.Tensor | None = None,
                demographics_mask: torch.Tensor | None = None, keep: torch.Tensor | None = None) -> torch.Tensor:
        """ecg (B, 12, T), lead_mask (B, 12) bool; keep (B, K) token indices to encode (None: all).
        Returns (B, prefix + K, dim); position 0 is the class token."""
        cfg = self.cfg
        B = ecg.shape[0]
        patches = patchify(ecg, cfg)  # (B, N, P)
        present = token_leads(lead_mask, cfg).float()  # (B, N, leads_per_token)
        lead = self.lead_index.expand(B, -1)
        time = self.time_index.expand(B, -1)
        if keep is not None:
            patches = torch.gather(patches, 1, keep.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
            present = torch.gather(present, 1, keep.unsqueeze(-1).expand(-1, -1, present.shape[-1]))
            lead, time = (torch.gather(t, 1, keep) for t in (lead, time))
        x = self.patch_embed(patches) + self.lead_embed(lead) + self.time_embed(time) + self.presence_embed(present)
        prefix = [self.cls_embed(torch.zeros(B, 1, dtype=torch.long, device=ecg.device))]
        if self.demographics is not None:
            if demographics is None:
                demographics = torch.zeros(B, 2, device=ecg.device)
                demographics_mask = torch.zeros(B, 2, dtype=torch.bool, device=ecg.device)
            values = torch.stack([demographics[:, 0] / 100.0, demographics[:, 1]], dim=1) * demographics_mask
            prefix.append(self.demographics(torch.cat([values, demographics_mask.float()], dim=1)).unsqueeze(1))
        return self.transformer(torch.cat([*prefix, x], dim=1))


def build_ecg_decoder(cfg: EcgEncoderConfig) -> MaskedDecoder:
    """Light decoder that reconstructs the hidden ECG patches from the visible tokens."""
    return MaskedDecoder(cfg.dim, cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads, cfg.mlp_ratio,
                         n_tokens=cfg.n_tokens, patch_size=cfg.token_size)


def choose_visible(lead_mask: torch.Tensor, cfg: EcgEncoderConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, K) indices of tokens the encoder sees: a random (1 - mask_ratio) share, measured leads first."""
    B = lead_mask.shape[0]
    n_tokens = cfg.n_tokens
    n_keep = max(1, int(round(n_tokens * (1 - cfg.mask_ratio))))
    present = token_leads(lead_mask, cfg).any(-1)
    noise = torch.rand(B, n_tokens, generator=generator, device=lead_mask.device) + (~present) * 2.0
    return noise.argsort(dim=1)[:, :n_keep]


def masked_reconstruction_loss(prediction: torch.Tensor, target: torch.Tensor, hidden: torch.Tensor, ncc_weight: float) -> torch.Tensor:
    """Per-sample loss (B,): MSE plus ncc_weight x (1 - normalised cross-correlation) over hidden tokens.
    `hidden` (B, N) marks tokens that were masked and belong to a measured lead."""
    mse = ((prediction - target) ** 2).mean(-1)  # (B, N)
    p = prediction - prediction.mean(-1, keepdim=True)
    t = target - target.mean(-1, keepdim=True)
    ncc = (p * t).sum(-1) / (p.norm(dim=-1) * t.norm(dim=-1) + 1e-6)
    per_token = mse + ncc_weight * (1 - ncc)
    weight = hidden.float()
    return (per_token * weight).sum(1) / weight.sum(1).clamp(min=1)


def masked_ecg_loss(encoder: EcgEncoder, decoder: MaskedDecoder, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample (B,) masked-modelling loss over the hidden tokens of measured leads."""
    cfg = encoder.cfg
    keep = choose_visible(batch["lead_mask"], cfg, generator)
    tokens = encoder(batch["ecg"], batch["lead_mask"], batch.get("demographics"), batch.get("demographics_mask"), keep=keep)
    prediction = decoder(tokens[:, encoder.n_prefix:], keep)
    hidden = token_leads(batch["lead_mask"], cfg).any(-1).clone()
    hidden.scatter_(1, keep, False)
    return masked_reconstruction_loss(prediction, patchify(batch["ecg"], cfg), hidden, cfg.ncc_weight)
