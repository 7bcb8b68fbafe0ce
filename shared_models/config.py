"""One config dataclass per model part and the presets; sizes change numbers, never code paths."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from shared_models.targets import DISEASES, INDICATORS, LEADS


@dataclass
class EcgEncoderConfig:
    n_leads: int = len(LEADS)
    sampling_rate_hz: int = 500  # site configs are checked against these (sitedata.model_geometry)
    window_s: float = 10.0
    patch_s: float = 0.2  # one token = one lead x 0.2 s (reference design)
    leads_per_token: int = 1  # 12: one token spans every lead (12x fewer tokens: the CPU preset)
    dim: int = 64
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 2.0
    decoder_dim: int = 32  # the masked-modelling decoder is deliberately light
    decoder_depth: int = 1
    decoder_heads: int = 2
    mask_ratio: float = 0.75  # fraction of tokens hidden from the encoder during masked pretraining
    ncc_weight: float = 0.1  # weight of the (1 - normalised cross-correlation) reconstruction term
    use_demographics: bool = True  # add an (age, sex) token where the manifest has them

    @property
    def samples_per_patch(self) -> int:
        return int(round(self.patch_s * self.sampling_rate_hz))

    @property
    def patches_per_lead(self) -> int:
        return int(round(self.window_s / self.patch_s))

    @property
    def lead_groups(self) -> int:
        if self.n_leads % self.leads_per_token:
            raise ValueError(f"leads_per_token={self.leads_per_token} does not divide {self.n_leads} leads")
        return self.n_leads // self.leads_per_token

    @property
    def n_tokens(self) -> int:
        return self.lead_groups * self.patches_per_lead

    @property
    def token_size(self) -> int:
        """Samples in one token: its leads x one patch."""
        return self.leads_per_token * self.samples_per_patch


@dataclass
class CmrEncoderConfig:
    frames: int = 16
    image_size: int = 64
    tubelet_frames: int = 4  # space-time patch: 4 frames x 8 x 8 pixels
    tubelet_pixels: int = 8
    dim: int = 64
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 2.0
    mask_ratio: float = 0.75  # masked CMR modelling: trains the CMR side under DP, where InfoNCE cannot be used
    decoder_dim: int = 32
    decoder_depth: int = 1
    decoder_heads: int = 2

    @property
    def n_tokens(self) -> int:
        return (self.frames // self.tubelet_frames) * (self.image_size // self.tubelet_pixels) ** 2


@dataclass
class AlignmentConfig:
    embed_dim: int = 64  # shared ECG-CMR embedding space
    temperature: float = 0.1  # InfoNCE temperature (reference 0.1)


@dataclass
class GeneratorConfig:
    """ECG-conditioned CMR diffusion model: a transformer denoiser over the same space-time tubelets as the
    CMR encoder, cross-attending to the ECG encoder's tokens."""

    tubelet_frames: int = 4
    tubelet_pixels: int = 8
    dim: int = 64
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 2.0
    train_timesteps: int = 1000  # cosine noise schedule over this many steps
    sample_steps: int = 20  # DDIM steps at inference (deterministic, eta = 0)
    cond_dropout: float = 0.1  # share of training samples whose ECG condition is replaced by the null token
    guidance: float = 1.0  # classifier-free guidance scale at sampling (1: none; >1 sharpened the ECG's effect
    # but cost SSIM and EF-proxy error on held-out clips at CPU training budgets)
    # Scale of the starting noise. 0 follows the deterministic path from the prior clip: the expected clip for
    # this ECG (what the ECG says about the heart), not one random draw of the details it cannot know.
    temperature: float = 0.0
    # x0: the denoiser predicts the clean clip, so an under-trained model samples a blurred conditional mean
    # rather than noise (what a CPU training budget gives); v: the usual choice for long training runs.
    prediction: str = "x0"


@dataclass
class HeadsConfig:
    n_indicators: int = len(INDICATORS)
    n_diseases: int = len(DISEASES)
    hidden: int = 0  # 0: linear heads on the pooled ECG embedding


@dataclass
class CardiacNetsConfig:
    preset: str = "tiny"
    ecg: EcgEncoderConfig = field(default_factory=EcgEncoderConfig)
    cmr: CmrEncoderConfig = field(default_factory=CmrEncoderConfig)
    align: AlignmentConfig = field(default_factory=AlignmentConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CardiacNetsConfig":
        return cls(
            preset=data["preset"], ecg=EcgEncoderConfig(**data["ecg"]), cmr=CmrEncoderConfig(**data["cmr"]),
            align=AlignmentConfig(**data["align"]), generator=GeneratorConfig(**data["generator"]),
            heads=HeadsConfig(**data["heads"]),
        )


def preset(name: str) -> CardiacNetsConfig:
    """tiny: tests on CPU in seconds; small: the reference token layout at 2-core sizes; cpu: all-lead ECG
    tokens, fast on 2 cores; base: a GPU (ViT-B-sized ECG encoder);
    paper: sizes as in the CardiacNets code (ViT-L ECG encoder, a Swin-B-sized CMR encoder)."""
    if name == "tiny":
        return CardiacNetsConfig(
            preset=name,
            ecg=EcgEncoderConfig(patch_s=0.5, dim=32, depth=1, heads=2, decoder_dim=16),
            cmr=CmrEncoderConfig(tubelet_frames=8, tubelet_pixels=16, dim=32, depth=1, heads=2),
            align=AlignmentConfig(embed_dim=32),
            generator=GeneratorConfig(tubelet_frames=8, tubelet_pixels=16, dim=32, depth=1, heads=2, sample_steps=4),
        )
    if name == "small":
        return CardiacNetsConfig(preset=name)
    if name == "cpu":
        # small's widths with one token per 0.2 s across all 12 leads (50 ECG tokens, not 600) and 4 x 16 x 16
        # CMR tubelets (64, not 256): the 2-core preset that trains at hundreds of ECGs per second.
        return CardiacNetsConfig(
            preset=name,
            ecg=EcgEncoderConfig(leads_per_token=12, dim=96, depth=3, heads=4),
            cmr=CmrEncoderConfig(tubelet_pixels=16),
        )
    if name == "base":
        return CardiacNetsConfig(
            preset=name,
            ecg=EcgEncoderConfig(dim=768, depth=12, heads=12, mlp_ratio=4.0, decoder_dim=256, decoder_depth=4, decoder_heads=8),
            cmr=CmrEncoderConfig(dim=512, depth=8, heads=8, mlp_ratio=4.0),
            align=AlignmentConfig(embed_dim=256),
            generator=GeneratorConfig(dim=384, depth=8, heads=6, mlp_ratio=4.0, sample_steps=50),
        )
    if name == "paper":
        return CardiacNetsConfig(
            preset=name,
            ecg=EcgEncoderConfig(dim=1024, depth=24, heads=16, mlp_ratio=4.0, decoder_dim=512, decoder_depth=8, decoder_heads=16),
            cmr=CmrEncoderConfig(dim=768, depth=12, heads=12, mlp_ratio=4.0),  # Swin-B-sized (~88 M)
            align=AlignmentConfig(embed_dim=512),
            generator=GeneratorConfig(tubelet_frames=2, dim=768, depth=12, heads=12, mlp_ratio=4.0, sample_steps=50),
        )
    raise ValueError(f"unknown preset {name!r} (expected one of {', '.join(PRESETS)})")


PRESETS = ("tiny", "small", "cpu", "base", "paper")
