"""CMR encoder: a ViT over space-time tubelets of a short-axis cine clip (frames x H x W), with its own
masked modelling (MAE-style), which trains the CMR side where a per-sample loss is required (DP-SGD)."""

from __future__ import annotations

import torch
from torch import nn

from shared_models.config import CmrEncoderConfig
from shared_models.masked_decoder import MaskedDecoder
from shared_models.transformer import Transformer


def tubelets(clip: torch.Tensor, frames: int, image_size: int, tubelet_frames: int, tubelet_pixels: int) -> torch.Tensor:
    """(B, F, H, W) -> (B, n_tokens, tf * tp * tp), time-major token order."""
    B, F, H, W = clip.shape
    if (F, H, W) != (frames, image_size, image_size):
        raise ValueError(f"CMR clip of shape {tuple(clip.shape)}; the model expects (B, {frames}, {image_size}, {image_size})")
    tf, tp = tubelet_frames, tubelet_pixels
    x = clip.reshape(B, F // tf, tf, H // tp, tp, W // tp, tp)
    return x.permute(0, 1, 3, 5, 2, 4, 6).reshape(B, (F // tf) * (H // tp) * (W // tp), tf * tp * tp)


def untubelets(tokens: torch.Tensor, frames: int, image_size: int, tubelet_frames: int, tubelet_pixels: int) -> torch.Tensor:
    """Inverse of `tubelets`: (B, n_tokens, tf * tp * tp) -> (B, F, H, W)."""
    B = tokens.shape[0]
    tf, tp = tubelet_frames, tubelet_pixels
    nf, ns = frames // tf, image_size // tp
    x = tokens.reshape(B, nf, ns, ns, tf, tp, tp).permute(0, 1, 4, 2, 5, 3, 6)
    return x.reshape(B, frames, image_size, image_size)


class CmrEncoder(nn.Module):
    def __init__(self, cfg: CmrEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = nn.Linear(cfg.tubelet_frames * cfg.tubelet_pixels ** 2, cfg.dim)
        self.position_embed = nn.Embedding(cfg.n_tokens, cfg.dim)
        self.cls_embed = nn.Embedding(1, cfg.dim)
        self.transformer = Transformer(cfg.dim, cfg.depth, cfg.heads, cfg.mlp_ratio)

    def patches(self, clip: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        return tubelets(clip, cfg.frames, cfg.image_size, cfg.tubelet_frames, cfg.tubelet_pixels)

    def forward(self, clip: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """(B, F, H, W) in [0, 1]; keep (B, K) token indices to encode (None: all).
        Returns (B, 1 + K, dim); position 0 is the class token."""
        B = clip.shape[0]
        patches = self.patches(clip)
        positions = torch.arange(self.cfg.n_tokens, device=clip.device).expand(B, -1)
        if keep is not None:
            patches = torch.gather(patches, 1, keep.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
            positions = torch.gather(positions, 1, keep)
        x = self.patch_embed(patches) + self.position_embed(positions)
        cls = self.cls_embed(torch.zeros(B, 1, dtype=torch.long, device=clip.device))
        return self.transformer(torch.cat([cls, x], dim=1))


def build_cmr_decoder(cfg: CmrEncoderConfig) -> MaskedDecoder:
    return MaskedDecoder(cfg.dim, cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads, cfg.mlp_ratio,
                         n_tokens=cfg.n_tokens, patch_size=cfg.tubelet_frames * cfg.tubelet_pixels ** 2)


def masked_cmr_loss(encoder: CmrEncoder, decoder: MaskedDecoder, clip: torch.Tensor,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample (B,) MSE over the hidden tubelets."""
    cfg = encoder.cfg
    B = clip.shape[0]
    n_keep = max(1, int(round(cfg.n_tokens * (1 - cfg.mask_ratio))))
    keep = torch.rand(B, cfg.n_tokens, generator=generator, device=clip.device).argsort(dim=1)[:, :n_keep]
    prediction = decoder(encoder(clip, keep)[:, 1:], keep)
    hidden = torch.ones(B, cfg.n_tokens, device=clip.device).scatter(1, keep, 0.0)
    mse = ((prediction - encoder.patches(clip)) ** 2).mean(-1)  # (B, N)
    return (mse * hidden).sum(1) / hidden.sum(1)
