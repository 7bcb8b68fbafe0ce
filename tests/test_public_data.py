"""The lab's public pretraining: it must leave embeddings that differ between subjects and retrieve a subject's
own CMR from its ECG above chance on the data it trained on (the two checks that would have caught the collapse
of the DP-only alignment), it is cached, and DP rounds at a site then keep the CMR side fixed."""

import copy

import pytest
import torch
from torch.utils.data import DataLoader

from client.privacy import OpacusPrivatizer
from server.public_data import public_sites, train_on_public_data
from server.study_config import PublicData
from sitedata.pooling import load_sites, pooled
from shared_models.cardiacnets import build_model
from shared_models.evaluation import evaluate
from shared_models.model_arrays import numpy_state
from protocol.site_metrics import MetricKey as K
from shared_models.training import TrainOptions, reference_pos_weight, train_phase

SPREAD_FLOOR = 0.9  # mean pairwise cosine of embeddings across subjects must stay below this


def _public(cohort, epochs=120):
    configs = sorted((cohort / "site_configs").glob("*.toml"))[:2]  # the two paired sites
    return PublicData(sites=tuple(configs), pretrain_epochs=epochs, generator_epochs=1, finetune_epochs=1, batch_size=8, lr=3e-4)


@pytest.fixture(scope="module")
def pretrained(tiny_cohort_template, tmp_path_factory):
    """(public data, its cache folder, the untrained model's pretrain metrics, the trained model, what it did)."""
    torch.manual_seed(0)
    public = _public(tiny_cohort_template)
    train = pooled(load_sites(public.sites[0].parent), "train")
    model = build_model("tiny")
    before = evaluate(model, DataLoader(train, batch_size=64), "pretrain")
    out = tmp_path_factory.mktemp("public")
    sites = public_sites(public)
    done = [train_on_public_data(model, public, sites, phase, out, seed=0) for phase in ("pretrain", "generator", "finetune")]
    return public, out, train, before, model, done


def test_public_pretraining_spreads_embeddings_retrieves_above_chance_and_is_cached(pretrained):
    public, out, train, before, model, done = pretrained
    assert [d.phase for d in done] == ["pretrain", "generator", "finetune"] and not any(d.cached for d in done)
    after = evaluate(model, DataLoader(train, batch_size=64), "pretrain")
    assert after[K.CMR_PAIRWISE_COSINE] < SPREAD_FLOOR and after[K.ECG_PAIRWISE_COSINE] < SPREAD_FLOOR
    assert after[K.RETRIEVAL_TOP1] >= 3 * after[K.RETRIEVAL_CHANCE] > 0
    assert after[K.RETRIEVAL_TOP1] > before[K.RETRIEVAL_TOP1]
    assert model.generator.prior_clip.abs().sum() > 0  # the mean public clip, the generator's starting point

    sites = public_sites(public)
    torch.manual_seed(0)
    again = build_model("tiny")  # the same starting weights: each phase's result is reused
    assert all(train_on_public_data(again, public, sites, phase, out, seed=0).cached for phase in ("pretrain", "generator", "finetune"))
    assert all((numpy_state(again)[k] == v).all() for k, v in numpy_state(model).items())
    other = build_model("tiny")  # other starting weights: trained afresh, not taken from the cache
    assert not train_on_public_data(other, public, sites, "generator", out, seed=0).cached


def test_changed_training_code_does_not_reuse_the_cache(pretrained, monkeypatch):
    import server.public_data

    public, out = pretrained[0], pretrained[1]
    sites = public_sites(public)
    torch.manual_seed(0)
    assert train_on_public_data(build_model("tiny"), public, sites, "pretrain", out, seed=0).cached
    monkeypatch.setattr(server.public_data, "training_code_hash", lambda: "another-version")  # e.g. a new loss
    torch.manual_seed(0)
    assert not train_on_public_data(build_model("tiny"), public, sites, "pretrain", out, seed=0).cached


def test_a_dp_site_round_aligns_both_towers_against_the_public_bank_and_keeps_the_spread(pretrained, monkeypatch):
    import client.privacy

    # The site's noise comes from os.urandom by design; a seeded source keeps this check about structure, not luck.
    from client.secure_random import ChaChaSource

    monkeypatch.setattr(client.privacy, "ChaChaSource", lambda: ChaChaSource(key=bytes(32), nonce=bytes(16)))
    torch.manual_seed(0)
    public, model = pretrained[0], copy.deepcopy(pretrained[4])
    site = pooled(load_sites(public.sites[1]), "train")
    cmr_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("cmr_encoder", "cmr_projection"))}
    bank = model.public_bank(DataLoader(pooled(load_sites(public.sites[0]), "train"), batch_size=64))
    privatizer = OpacusPrivatizer(noise_multiplier=1.0, max_grad_norm=1.0)
    train_phase(model, DataLoader(site, batch_size=4, shuffle=True), TrainOptions(phase="pretrain", alignment="public-bank", epochs=3),
                public_bank=bank, privatize=privatizer)
    privatizer.close()
    state = model.state_dict()
    assert not all(torch.equal(state[k], v) for k, v in cmr_before.items())  # the site's scanners teach the CMR side
    spread = evaluate(model, DataLoader(site, batch_size=64), "pretrain")
    assert spread[K.CMR_PAIRWISE_COSINE] < SPREAD_FLOOR and spread[K.ECG_PAIRWISE_COSINE] < SPREAD_FLOOR


def test_public_fine_tuning_keeps_the_epoch_with_the_best_validation_figures(pretrained):
    from server.public_data import _finetune_with_early_stopping, validation_score

    public, model = pretrained[0], copy.deepcopy(pretrained[4])
    sites = load_sites(public.sites[0].parent)
    train, validation = pooled(sites[:2], "train"), pooled(sites[:2], "val")
    val_loader = DataLoader(validation, batch_size=64)

    def loader():
        return DataLoader(train, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))

    scores, replay, replay_loader = [], copy.deepcopy(model), loader()
    for epoch in range(4):  # the same epochs by hand, recording each one's validation figures
        train_phase(replay, replay_loader, TrainOptions(phase="finetune", epochs=1, lr=3e-2, seed=epoch + 1),
                    pos_weight=reference_pos_weight())
        scores.append(validation_score(evaluate(replay, val_loader, "finetune")))
    assert len(set(scores)) > 1  # the epochs differ, so the choice is a real one
    # a rate high enough to overshoot
    _finetune_with_early_stopping(model, loader(), validation, TrainOptions(phase="finetune", epochs=4, lr=3e-2, seed=0))
    assert abs(validation_score(evaluate(model, val_loader, "finetune")) - max(scores)) < 1e-6


def test_masked_only_pretraining_is_its_own_result_and_does_not_learn_retrieval(pretrained):
    """The ablation arm: the same public data and epochs without the alignment term (public.alignment_weight 0)."""
    import dataclasses

    public, out, train, before, aligned, _ = pretrained
    masked_only = dataclasses.replace(public, alignment_weight=0.0)
    torch.manual_seed(0)
    model = build_model("tiny")
    done = train_on_public_data(model, masked_only, public_sites(masked_only), "pretrain", out, seed=0)
    assert not done.cached  # not the aligned model from the same cache folder
    scores = evaluate(model, DataLoader(train, batch_size=64), "pretrain")
    aligned_scores = evaluate(aligned, DataLoader(train, batch_size=64), "pretrain")
    assert scores[K.RETRIEVAL_TOP1] < aligned_scores[K.RETRIEVAL_TOP1]
    assert scores[K.ALIGNMENT_COSINE] < aligned_scores[K.ALIGNMENT_COSINE]


def test_the_public_bank_travels_as_bytes_and_a_malformed_one_is_refused(pretrained):
    from protocol.public_bank import decode_bank, encode_bank
    from server.public_data import PublicBankSource

    public, model = pretrained[0], pretrained[4]
    source = PublicBankSource("tiny", public_sites(public))
    data = source(numpy_state(model))
    ecg, cmr = decode_bank(data)
    pairs = sum(1 for site in public_sites(public) for s in site.subjects if s.split == "train" and s.cmr_key)
    assert ecg.shape == cmr.shape == (pairs, model.config.align.embed_dim)
    assert abs(float((ecg ** 2).sum(1).mean()) - 1) < 1e-2  # unit embeddings (float16 on the wire)
    with pytest.raises(ValueError, match="header says"):
        decode_bank(data[:-2])
    with pytest.raises(ValueError, match="non-finite"):
        decode_bank(encode_bank(ecg * float("nan"), cmr))
