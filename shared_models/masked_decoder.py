"""MAE-style light decoder shared by masked ECG and masked CMR modelling: visible encoder tokens go back to
their positions, mask tokens fill the rest, and a small transformer predicts every patch."""

from __future__ import annotations

import torch
from torch import nn

from shared_models.transformer import Transformer


class MaskedDecoder(nn.Module):
    def __init__(self, in_dim: int, dim: int, depth: int, heads: int, mlp_ratio: float, *, n_tokens: int, patch_size: int):
        super().__init__()
        self.n_tokens = n_tokens
        self.embed = nn.Linear(in_dim, dim)
        self.mask_embed = nn.Embedding(1, dim)
        self.position_embed = nn.Embedding(n_tokens, dim)
        self.transformer = Transformer(dim, depth, heads, mlp_ratio)
        self.predict = nn.Linear(dim, patch_size)

    def forward(self, visible: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """visible (B, K, in_dim) encoder outputs without prefix, keep (B, K) their positions
        -> (B, n_tokens, patch_size) predictions for every token."""
        B = visible.shape[0]
        x = self.mask_embed(torch.zeros(B, self.n_tokens, dtype=torch.long, device=visible.device))
        x = x.scatter(1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]), self.embed(visible))
        positions = torch.arange(self.n_tokens, device=visible.device).expand(B, -1)
        return self.predict(self.transformer(x + self.position_embed(positions)))
