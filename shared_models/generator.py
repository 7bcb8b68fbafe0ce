"""ECG-conditioned CMR generator: a diffusion model in pixel space whose denoiser is a transformer over
space-time tubelets that cross-attends to the ECG encoder's tokens.

- Noise: cosine schedule; the denoiser predicts the clean clip x0 (default) or v (= sqrt(a) * noise -
  sqrt(1 - a) * x0), set by `GeneratorConfig.prediction`.
- Classifier-free guidance: during training `cond_dropout` of the samples see a learned null condition
  instead of their ECG; sampling mixes conditional and unconditional predictions with `guidance`.
- Sampling: deterministic DDIM (eta = 0) over `sample_steps` steps.
- Prior clip: diffusion runs on the residual from a fixed population-mean clip (`set_prior_clip`, from the lab's
  public data), and the output layer starts at zero, so an untrained generator samples that mean clip and
  training only has to learn what the ECG changes. Without a prior the residual is from mid-grey.
Clips are in [0, 1] outside this module and in [-1, 1] inside it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from shared_models.cmr_encoder import tubelets, untubelets
from shared_models.config import CmrEncoderConfig, GeneratorConfig
from shared_models.transformer import ConditionedBlock


def alpha_bar(t: torch.Tensor, train_timesteps: int) -> torch.Tensor:
    """Cosine schedule (Nichol & Dhariwal): share of signal variance left at integer step t in [0, T]."""
    s = 0.008
    f = torch.cos((t.float() / train_timesteps + s) / (1 + s) * math.pi / 2) ** 2
    return (f / math.cos(s / (1 + s) * math.pi / 2) ** 2).clamp(1e-5, 1.0)


def timestep_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) integer steps -> (B, dim) sinusoidal features (no parameters)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    angles = t.float().unsqueeze(1) * freqs.unsqueeze(0)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class CmrGenerator(nn.Module):
    def __init__(self, cfg: GeneratorConfig, cmr: CmrEncoderConfig, ecg_dim: int):
        super().__init__()
        self.cfg, self.cmr = cfg, cmr
        self.n_tokens = (cmr.frames // cfg.tubelet_frames) * (cmr.image_size // cfg.tubelet_pixels) ** 2
        patch = cfg.tubelet_frames * cfg.tubelet_pixels ** 2
        self.patch_embed = nn.Linear(patch, cfg.dim)
        self.position_embed = nn.Embedding(self.n_tokens, cfg.dim)
        self.time_mlp = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        self.condition_proj = nn.Linear(ecg_dim, cfg.dim)
        self.null_condition = nn.Embedding(1, cfg.dim)  # what a dropped (or absent) ECG condition becomes
        self.blocks = nn.ModuleList(ConditionedBlock(cfg.dim, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        self.out = nn.Linear(cfg.dim, patch)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        # A buffer, not a parameter: it travels with the weights but no site trains it.
        self.register_buffer("prior_clip", torch.zeros(cmr.frames, cmr.image_size, cmr.image_size))

    @torch.no_grad()
    def set_prior_clip(self, clip: torch.Tensor) -> None:
        """clip (F, H, W) in [0, 1]: the population-mean clip the residual diffusion starts from."""
        self.prior_clip.copy_(torch.as_tensor(clip, dtype=self.prior_clip.dtype) * 2 - 1)

    def _tubelets(self, clip: torch.Tensor) -> torch.Tensor:
        return tubelets(clip, self.cmr.frames, self.cmr.image_size, self.cfg.tubelet_frames, self.cfg.tubelet_pixels)

    def condition(self, ecg_tokens: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        """(B, S, ecg_dim) ECG tokens -> (B, S, dim); samples where `drop` (B,) is True get the null condition."""
        B, S, _ = ecg_tokens.shape
        null = self.null_condition(torch.zeros(B, S, dtype=torch.long, device=ecg_tokens.device))
        return torch.where(drop.view(B, 1, 1), null, self.condition_proj(ecg_tokens))

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """noisy (B, F, H, W) in model space, t (B,) steps, condition (B, S, dim) -> predicted x0 or v (B, F, H, W)."""
        B = noisy.shape[0]
        positions = torch.arange(self.n_tokens, device=noisy.device).expand(B, -1)
        x = self.patch_embed(self._tubelets(noisy)) + self.position_embed(positions)
        x = x + self.time_mlp(timestep_features(t, self.cfg.dim)).unsqueeze(1)
        for block in self.blocks:
            x = block(x, condition)
        tokens = self.out(self.norm(x))
        return untubelets(tokens, self.cmr.frames, self.cmr.image_size, self.cfg.tubelet_frames, self.cfg.tubelet_pixels)

    def loss(self, clip: torch.Tensor, ecg_tokens: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-sample (B,) denoising MSE (on x0 or v) at a random step, with condition dropout applied."""
        B = clip.shape[0]
        x0 = clip * 2 - 1 - self.prior_clip
        t = torch.randint(1, self.cfg.train_timesteps + 1, (B,), generator=generator, device=clip.device)
        noise = torch.randn(x0.shape, generator=generator, device=clip.device)
        a = alpha_bar(t, self.cfg.train_timesteps).view(B, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        drop = torch.rand(B, generator=generator, device=clip.device) < self.cfg.cond_dropout
        target = x0 if self.cfg.prediction == "x0" else a.sqrt() * noise - (1 - a).sqrt() * x0
        output = self(noisy, t, self.condition(ecg_tokens, drop))
        return ((output - target) ** 2).flatten(1).mean(1)

    @torch.no_grad()
    def sample(self, ecg_tokens: torch.Tensor, *, steps: int | None = None, guidance: float | None = None,
               temperature: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """DDIM (eta = 0) from noise scaled by `temperature` -> clips (B, F, H, W) in [0, 1]."""
        cfg = self.cfg
        steps = steps or cfg.sample_steps
        guidance = cfg.guidance if guidance is None else guidance
        temperature = cfg.temperature if temperature is None else temperature
        B, device = ecg_tokens.shape[0], ecg_tokens.device
        shape = (B, self.cmr.frames, self.cmr.image_size, self.cmr.image_size)
        x = temperature * torch.randn(shape, generator=generator, device=device)
        conditioned = self.condition(ecg_tokens, torch.zeros(B, dtype=torch.bool, device=device))
        unconditioned = self.condition(ecg_tokens, torch.ones(B, dtype=torch.bool, device=device))
        schedule = torch.linspace(cfg.train_timesteps, 0, steps + 1, device=device).round().long()
        for t, t_next in zip(schedule[:-1], schedule[1:]):
            tt = t.expand(B)
            output = self(x, tt, conditioned)
            if guidance != 1.0:
                free = self(x, tt, unconditioned)
                output = free + guidance * (output - free)
            a = alpha_bar(t, cfg.train_timesteps)
            a_next = alpha_bar(t_next, cfg.train_timesteps) if t_next > 0 else torch.ones((), device=device)
            x0 = output if cfg.prediction == "x0" else a.sqrt() * x - (1 - a).sqrt() * output
            x0 = torch.maximum(torch.minimum(x0, 1 - self.prior_clip), -1 - self.prior_clip)  # clip in [-1, 1]
            noise = (x - a.sqrt() * x0) / (1 - a).sqrt()  # consistent with the clamped x0
            x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * noise
        return ((x + self.prior_clip + 1) / 2).clamp(0, 1)

