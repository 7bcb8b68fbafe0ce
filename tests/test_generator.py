"""ECG-conditioned CMR generator: schedule, condition dropout that is really applied, DDIM sampling."""

import torch

from shared_models.cardiacnets import build_model
from shared_models.generator import alpha_bar


def _inputs(model, B=4):
    g = torch.Generator().manual_seed(0)
    cfg = model.config
    T = cfg.ecg.samples_per_patch * cfg.ecg.patches_per_lead
    return {
        "ecg": torch.randn(B, 12, T, generator=g), "lead_mask": torch.ones(B, 12, dtype=torch.bool),
        "cmr": torch.rand(B, cfg.cmr.frames, cfg.cmr.image_size, cfg.cmr.image_size, generator=g),
        "has_cmr": torch.tensor([True] * (B - 1) + [False]),
    }


def test_cosine_schedule_runs_from_signal_to_noise():
    a = alpha_bar(torch.arange(0, 1001), 1000)
    assert a[0] > 0.999 and a[-1] < 1e-3
    assert (a[1:] <= a[:-1]).all()


def test_condition_dropout_is_applied_in_training():
    torch.manual_seed(0)
    model = build_model("tiny")
    batch = _inputs(model)
    tokens = model.ecg_tokens(batch).detach()
    other = torch.randn_like(tokens)
    gen = model.generator
    torch.nn.init.normal_(gen.out.weight, std=0.02)  # the output starts at zero, where no condition can matter

    def loss(condition_tokens):
        return gen.loss(batch["cmr"], condition_tokens, torch.Generator().manual_seed(3))

    gen.cfg.cond_dropout = 1.0  # every sample sees the null condition: the ECG cannot matter
    assert torch.allclose(loss(tokens), loss(other))
    gen.cfg.cond_dropout = 0.0
    assert not torch.allclose(loss(tokens), loss(other))


def test_generator_loss_is_zero_for_samples_without_cmr():
    model = build_model("tiny")
    per_sample = model.generator_loss(_inputs(model))
    assert per_sample.shape == (4,) and per_sample[-1] == 0 and (per_sample[:-1] > 0).all()


def test_ddim_sampling_gives_reproducible_clips_in_range_and_guidance_costs_one_extra_pass():
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    torch.nn.init.normal_(model.generator.out.weight, std=0.02)  # as if trained: the output depends on its input
    batch = _inputs(model, B=2)
    calls = []
    handle = model.generator.register_forward_hook(lambda *_: calls.append(1))
    clip = model.generate(batch, steps=3, guidance=1.0, generator=torch.Generator().manual_seed(1))
    assert len(calls) == 3
    calls.clear()
    again = model.generate(batch, steps=3, guidance=3.0, generator=torch.Generator().manual_seed(1))
    assert len(calls) == 6  # conditional + unconditional per step
    handle.remove()
    cfg = model.config.cmr
    assert clip.shape == (2, cfg.frames, cfg.image_size, cfg.image_size)
    assert clip.min() >= 0 and clip.max() <= 1
    assert not torch.equal(clip, again)
    assert torch.equal(clip, model.generate(batch, steps=3, guidance=1.0, generator=torch.Generator().manual_seed(1)))


def test_generator_learns_to_follow_its_condition():
    """Two kinds of ECG, two distinct clips: after training, each ECG generates a clip near its own target."""
    torch.manual_seed(0)
    model = build_model("tiny")
    batch = _inputs(model, B=8)
    batch["has_cmr"][:] = True
    batch["ecg"][:4], batch["cmr"][:4] = 0.0, 0.1
    batch["ecg"][4:], batch["cmr"][4:] = 1.0, 0.9
    optimizer = torch.optim.Adam(model.generator.parameters(), lr=3e-3)
    for step in range(150):
        loss = model.generator_loss(batch, torch.Generator().manual_seed(step)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    clips = model.generate(batch, steps=4, generator=torch.Generator().manual_seed(0))
    assert clips[:4].mean() < 0.35 and clips[4:].mean() > 0.65


def test_an_untrained_generator_samples_its_prior_clip_and_training_moves_it():
    torch.manual_seed(0)
    model = build_model("tiny")
    batch = _inputs(model)
    prior = torch.linspace(0.1, 0.9, model.config.cmr.image_size).expand(model.config.cmr.frames, model.config.cmr.image_size, -1)
    model.generator.set_prior_clip(prior)
    clip = model.generate(batch, steps=3, temperature=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(clip, prior.expand_as(clip), atol=1e-5)  # the mean heart, not noise
    torch.nn.init.normal_(model.generator.out.weight, std=0.02)
    assert not torch.allclose(model.generate(batch, steps=3), prior.expand_as(clip), atol=1e-3)
    assert "generator.prior_clip" in model.state_dict()  # it travels with the weights
