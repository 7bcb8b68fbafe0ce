"""The one training loop on a real (tiny) prepared cohort: phases, what each trains, FedProx, DP-SGD through
the privatize seam, evaluation output."""

import math

import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset, DataLoader

from client.privacy import OpacusPrivatizer
from client.privacy_ledger import epsilon_of
from sitedata.site_config import load_site_config
from sitedata.site_data import prepare_site
from sitedata.site_dataset import SiteDataset
from shared_models.cardiacnets import build_model
from shared_models.evaluation import evaluate
from shared_models.training import TrainOptions, train_phase


@pytest.fixture(scope="module")
def cohort_sites(tiny_cohort_template):
    return [prepare_site(load_site_config(p)) for p in sorted((tiny_cohort_template / "site_configs").glob("*.toml"))]


@pytest.fixture(scope="module")
def loader(cohort_sites):
    dataset = ConcatDataset([SiteDataset(site) for site in cohort_sites])
    return DataLoader(dataset, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _changed_parts(model, before):
    return {n.split(".")[0] for n, p in model.named_parameters() if not torch.equal(p, before[n])}


@pytest.mark.parametrize("phase, has_cmr, expected", [
    ("pretrain", True, {"ecg_encoder", "ecg_decoder", "ecg_projection", "cmr_encoder", "cmr_decoder", "cmr_projection"}),
    ("pretrain", False, {"ecg_encoder", "ecg_decoder"}),
    ("generator", True, {"generator"}),
    ("finetune", True, {"ecg_encoder", "indicator_head", "disease_head"}),
])
def test_each_phase_trains_exactly_its_parts(loader, phase, has_cmr, expected):
    torch.manual_seed(0)
    model = build_model("tiny")
    before = _snapshot(model)
    result = train_phase(model, loader, TrainOptions(phase=phase, max_steps=2), has_cmr=has_cmr)
    assert result.steps == 2 and math.isfinite(result.mean_loss) and result.examples > 0
    assert _changed_parts(model, before) == expected


def test_a_site_without_cmr_skips_the_generator(loader):
    model = build_model("tiny")
    result = train_phase(model, loader, TrainOptions(phase="generator"), has_cmr=False)
    assert result.steps == 0 and result.examples == 0


def test_linear_probe_leaves_the_encoder_alone(loader):
    model = build_model("tiny")
    before = _snapshot(model)
    train_phase(model, loader, TrainOptions(phase="finetune", finetune_mode="linear", max_steps=2))
    assert _changed_parts(model, before) == {"indicator_head", "disease_head"}


def test_finetune_loss_falls_on_a_fixed_batch(cohort_sites):
    # The heads start at the prior, so the tiny cohort's epoch loss starts low and is mostly noise; fitting one
    # fixed batch shows that the phase learns.
    dataset = ConcatDataset([SiteDataset(site) for site in cohort_sites])
    batch = next(iter(DataLoader(dataset, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))))
    torch.manual_seed(0)
    model = build_model("tiny")
    losses = [train_phase(model, [batch], TrainOptions(phase="finetune", lr=3e-3, seed=e)).mean_loss for e in range(30)]
    assert losses[-1] < 0.8 * losses[0]


def test_fedprox_pulls_towards_the_global_weights(loader):
    torch.manual_seed(0)
    model = build_model("tiny")
    before = _snapshot(model)
    # with lr x mu = 1 the proximal step lands exactly on the round's global weights
    train_phase(model, loader, TrainOptions(phase="finetune", lr=1e-3, proximal_mu=1000.0, max_steps=3))
    assert all(torch.allclose(p, before[n], atol=1e-6) for n, p in model.named_parameters())
    free = build_model("tiny")
    free.load_state_dict(model.state_dict())
    train_phase(free, loader, TrainOptions(phase="finetune", lr=1e-3, max_steps=3))
    assert _changed_parts(free, before)


@pytest.mark.parametrize("phase", ["pretrain", "generator", "finetune"])
def test_every_phase_trains_under_dp_sgd(loader, phase):
    torch.manual_seed(0)
    model = build_model("tiny")
    before = _snapshot(model)
    privatizer = OpacusPrivatizer(noise_multiplier=1.0, max_grad_norm=1.0)
    options = TrainOptions(phase=phase, alignment="public-bank", epochs=1)
    bank = model.public_bank(DataLoader(loader.dataset, batch_size=16))
    result = train_phase(model, loader, options, public_bank=bank, privatize=privatizer)
    privatizer.close()
    assert result.steps >= 1
    changed = _changed_parts(model, before)
    expected = {"pretrain": {"ecg_encoder", "ecg_projection", "cmr_encoder", "cmr_projection"},  # both towers
                "generator": {"generator"}, "finetune": {"disease_head"}}[phase]
    assert expected <= changed
    (sigma, sample_rate, steps), = privatizer.history
    assert sigma == 1.0 and steps == result.steps and 0 < sample_rate < 1
    assert epsilon_of(privatizer.history, 1e-5) > 0
    # hooks are gone: the model trains again without DP
    train_phase(model, loader, TrainOptions(phase=phase, max_steps=1))


def test_dp_refuses_infonce_which_couples_a_batch(loader):
    with pytest.raises(ValueError, match="public-bank"):
        train_phase(build_model("tiny"), loader, TrainOptions(phase="pretrain"),
                    privatize=OpacusPrivatizer(noise_multiplier=1.0, max_grad_norm=1.0))


def test_accountant_history_continues_across_calls(loader):
    first = OpacusPrivatizer(noise_multiplier=1.0, max_grad_norm=1.0)
    model = build_model("tiny")
    train_phase(model, loader, TrainOptions(phase="finetune"), privatize=first)
    first.close()
    second = OpacusPrivatizer(noise_multiplier=1.0, max_grad_norm=1.0, history=first.history)
    train_phase(model, loader, TrainOptions(phase="finetune"), privatize=second)
    second.close()
    assert sum(steps for _, _, steps in second.history) == 2 * sum(steps for _, _, steps in first.history)
    assert epsilon_of(second.history, 1e-5) > epsilon_of(first.history, 1e-5)


def test_evaluation_reports_aggregates_per_phase(loader):
    loader = DataLoader(loader.dataset, batch_size=8)  # fixed order: evaluation must be repeatable
    model = build_model("tiny")
    pretrain = evaluate(model, loader, "pretrain")
    assert {"loss", "num-examples", "masked_ecg", "alignment_cosine", "retrieval_top1"} <= set(pretrain)
    generator = evaluate(model, loader, "generator", generate_samples=2, reference_clip=np.full((16, 64, 64), 0.3))
    assert generator["generated_samples"] == 2 and {"ssim", "psnr", "baseline_ssim", "ef_proxy_mae"} <= set(generator)
    finetune = evaluate(model, loader, "finetune", bootstrap=20)
    assert {"r2/LVEF", "mae/LVEF", "pearson/LVEF", "auroc/CAD", "auroc/CAD_low", "auprc/CAD", "mean_auroc"} <= set(finetune)
    assert all(isinstance(v, float) for v in finetune.values())
    # the same model and data give the same figures (fixed evaluation masks and noise)
    assert evaluate(model, loader, "pretrain")["masked_ecg"] == pretrain["masked_ecg"]


def test_evaluation_keeps_label_and_score_conventions_across_sites(cohort_sites):
    """A model whose disease score is the label itself must reach AUROC 1 on every disease, over all sites'
    samples pooled: a sign or label-order slip anywhere between manifest and metric would show here."""
    dataset = ConcatDataset([SiteDataset(site) for site in cohort_sites])
    model = build_model("tiny")

    def heads_that_know(batch):
        indicators = torch.zeros(len(batch["ecg"]), 9)
        return indicators, batch["diseases"] * 4 - 2  # logit +2 for positives, -2 for negatives

    model.heads = heads_that_know
    result = evaluate(model, DataLoader(dataset, batch_size=16), "finetune")
    aurocs = {k: v for k, v in result.items() if k.startswith("auroc/") and not k.endswith(("_low", "_high"))}
    defined = [v for v in aurocs.values() if not math.isnan(v)]
    assert defined and all(v == 1.0 for v in defined)


@pytest.mark.parametrize("phase", ["pretrain", "generator", "finetune"])
@pytest.mark.parametrize("alignment", ["infonce", "public-bank"])
def test_an_empty_poisson_batch_gives_a_finite_loss(loader, phase, alignment):
    """DP's Poisson sampling sometimes draws no sample at all; the step must still run (and add its noise)."""
    from shared_models.training import PhaseObjective

    batch = next(iter(loader))
    empty = {k: v[:0] for k, v in batch.items()}
    model = build_model("tiny")
    bank = model.public_bank([batch])
    loss = PhaseObjective(model, TrainOptions(phase=phase, alignment=alignment), public_bank=bank)(empty)
    assert torch.isfinite(loss) and float(loss) == 0.0


def test_an_untrained_model_scores_every_record_alike_so_no_auroc_starts_below_chance(cohort_sites):
    """Random heads used to rank patients by an arbitrary direction of the features (held-out AUROCs near 0.2 for
    several diseases at once) and a few noisy DP steps did not undo it. Heads now start at the prior."""
    dataset = ConcatDataset([SiteDataset(site) for site in cohort_sites])
    torch.manual_seed(0)
    result = evaluate(build_model("tiny"), DataLoader(dataset, batch_size=16), "finetune")
    defined = [v for k, v in result.items() if k.startswith("auroc/") and not k.endswith(("_low", "_high")) and not math.isnan(v)]
    assert defined and all(v == 0.5 for v in defined)


def test_a_private_pairs_alignment_gradient_depends_on_that_pair_and_the_public_bank_only(loader):
    """Under DP each pair's loss may involve only itself and public data, or per-sample clipping bounds nothing:
    replacing another private pair (ECG and CMR) must leave one pair's gradient exactly as it was, and the public
    bank must matter. Batch InfoNCE fails the first check (shown here too)."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = build_model("tiny").eval()  # eval(): the projections use their fixed statistics, as under DP
    data = next(iter(DataLoader(loader.dataset, batch_size=12, shuffle=True, generator=torch.Generator().manual_seed(5))))
    paired = data["has_cmr"].nonzero().flatten()
    assert len(paired) >= 4
    batch = {k: v[paired[:3]] for k, v in data.items()}
    changed = {k: v.clone() for k, v in batch.items()}
    for key in ("ecg", "cmr", "lead_mask"):
        changed[key][2] = data[key][paired[3]]
    bank = model.public_bank([{k: v[3:] for k, v in data.items()}])
    parameters = [p for p in model.parameters()]

    def first_pair_gradient(b, loss_of):
        terms = loss_of(b)
        grads = torch.autograd.grad(terms[0], parameters, allow_unused=True)
        return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, parameters)])

    def batch_infonce_rows(b):  # the i-th ECG's cross-entropy row of batch InfoNCE
        ecg = F.normalize(model.ecg_embedding(b), dim=-1)
        cmr = F.normalize(model.cmr_embedding(b["cmr"]), dim=-1)
        logits = ecg @ cmr.T / model.config.align.temperature
        return F.cross_entropy(logits, torch.arange(len(logits)), reduction="none")

    with_bank = lambda b, public=bank: model.public_bank_loss(b, public)  # noqa: E731
    first = first_pair_gradient(batch, with_bank)
    assert first.abs().sum() > 0
    assert torch.allclose(first, first_pair_gradient(changed, with_bank), atol=1e-7)
    moved = type(bank)(bank.ecg.roll(1, 0), F.normalize(torch.randn_like(bank.cmr), dim=-1))
    assert not torch.allclose(first, first_pair_gradient(batch, lambda b: with_bank(b, moved)), atol=1e-6)
    assert not torch.allclose(first_pair_gradient(batch, batch_infonce_rows),
                              first_pair_gradient(changed, batch_infonce_rows), atol=1e-6)


def test_last_block_fine_tuning_trains_the_heads_and_the_encoders_last_block_only(loader):
    torch.manual_seed(0)
    model = build_model("tiny")
    before = _snapshot(model)
    train_phase(model, loader, TrainOptions(phase="finetune", finetune_mode="last-block", max_steps=3))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    last = len(model.ecg_encoder.transformer.blocks) - 1
    assert any(n.startswith(f"ecg_encoder.transformer.blocks.{last}.") for n in changed)
    assert all(n.startswith(("indicator_head", "disease_head", f"ecg_encoder.transformer.blocks.{last}.",
                             "ecg_encoder.transformer.norm")) for n in changed)
    assert not any(n.startswith("ecg_encoder.patch_embed") for n in changed)


def test_a_paired_gain_is_zero_against_itself_and_has_its_own_interval(loader):
    from shared_models.evaluation import paired_gains

    fixed = DataLoader(loader.dataset, batch_size=16)
    torch.manual_seed(0)
    model = build_model("tiny")
    same = paired_gains(model, model, fixed, "finetune", bootstrap=30)
    assert same["gain/mean_auroc"] == 0 and same["gain/mean_auroc_low"] == same["gain/mean_auroc_high"] == 0
    trained = build_model("tiny")
    trained.load_state_dict(model.state_dict())
    train_phase(trained, loader, TrainOptions(phase="finetune", max_steps=20, lr=3e-3))
    gain = paired_gains(trained, model, fixed, "finetune", bootstrap=30)
    assert gain["gain/mean_auroc"] != 0 and gain["gain/mean_auroc_low"] <= gain["gain/mean_auroc"] <= gain["gain/mean_auroc_high"]
    assert set(paired_gains(trained, model, fixed, "pretrain")) == {"gain/retrieval_top5"}


def test_a_dp_pretraining_round_at_a_site_without_pairs_trains_its_ecg_parts(tiny_cohort_template):
    """Before: an ECG-only site's DP pretraining round raised 'needs the bank of public pair embeddings' (its
    pairs' alignment term is 0 and the bank is not sent to it), and the site failed every pretraining round."""
    from client.privacy import OpacusPrivatizer
    from client.site_round import phase_dataset
    from shared_models.cardiacnets import build_model
    from shared_models.training import TrainOptions, train_phase
    from sitedata.site_config import load_site_config
    from sitedata.site_data import prepare_site

    site = prepare_site(load_site_config(tiny_cohort_template / "site_configs" / "hospital-a.toml"))
    model = build_model("tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    privatizer = OpacusPrivatizer(noise_multiplier=1.0, max_grad_norm=1.0)
    result = train_phase(model, DataLoader(phase_dataset(site, "pretrain"), batch_size=4),
                         TrainOptions(phase="pretrain", alignment="public-bank"), has_cmr=False, privatize=privatizer)
    privatizer.close()
    after = model.state_dict()
    assert result.steps > 0
    assert any(not torch.equal(after[k], before[k]) for k in before if k.startswith("ecg_encoder."))
    assert all(torch.equal(after[k], before[k]) for k in before if k.startswith("cmr_encoder."))
