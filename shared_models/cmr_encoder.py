"""CMR encoder: a ViT over space-time tubelets of a short-axis cine clip (frames x H x W)."""

from __future__ import annotations

import torch
from torch import nn

from shared_models.config import CmrEncoderConfig
from shared_models.transformer import Transformer


def tubelets(clip: torch.Tensor, cfg: CmrEncoderConfig) -> torch.Tensor:
    """(B, F, H, W) -> (B, n_tokens, tf * tp * tp)."""
    B, F, H, W = clip.shape
    if (F, H, W) != (cfg.frames, cfg.image_size, cfg.image_size):
        raise ValueError(f"CMR clip of shape {tuple(clip.shape)}; the model expects (B, {cfg.frames}, {cfg.image_size}, {cfg.image_size})")
    tf, tp = cfg.tubelet_frames, cfg.tubelet_pixels
    x = clip.reshape(B, F // tf, tf, H // tp, tp, W // tp, tp)
    return x.permute(0, 1, 3, 5, 2, 4, 6).reshape(B, -1, tf * tp * tp)


class CmrEncoder(nn.Module):
    def __init__(self, cfg: CmrEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = nn.Linear(cfg.tubelet_frames * cfg.tubelet_pixels ** 2, cfg.dim)
        self.position_embed = nn.Embedding(cfg.n_tokens, cfg.dim)
        self.cls_embed = nn.Embedding(1, cfg.dim)
        self.transformer = Transformer(cfg.dim, cfg.depth, cfg.heads, cfg.mlp_ratio)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        """(B, F, H, W) in [0, 1] -> (B, 1 + n_tokens, dim); position 0 is the class token."""
        B = clip.shape[0]
        positions = torch.arange(self.cfg.n_tokens, device=clip.device).expand(B, -1)
        x = self.patch_embed(tubelets(clip, self.cfg)) + self.position_embed(positions)
        cls = self.cls_embed(torch.zeros(B, 1, dtype=torch.long, device=clip.device))
        return self.transformer(torch.cat([cls, x], dim=1))
