"""Distributed DP through SecAgg+ (client/distributed_dp.py): each site adds σ/√t of the noise, the sum carries σ,
each ledger accounts (σ, q, 1) per round, the site takes t from its own SecAgg+ state, and the server refuses a
sum with fewer than t shares."""

import math

import numpy as np
import pytest
import torch
from flwr.common import ConfigRecord, Context, Message, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_STATE

from client.distributed_dp import add_noise_share_only, noise_share
from client.privacy_ledger import epsilon_of
from protocol.codec import decode_weights, encode_weights
from protocol.round_contract import RoundConfig


def test_shares_of_t_sites_sum_to_the_full_noise():
    sigma, clip, lr, batch, t = 1.3, 0.7, 0.5, 16, 3
    share = noise_share(sigma, t)
    total = torch.zeros(200_000)
    for site in range(t):
        p = torch.nn.Parameter(torch.zeros(200_000))
        add_noise_share_only([p], share=share, max_grad_norm=clip, lr=lr, batch=batch)
        total += p.detach()
    # w - lr/b * sum of noises: its std is lr/b * sigma * C
    assert float(total.std()) == pytest.approx(lr / batch * sigma * clip, rel=0.02)
    with pytest.raises(ValueError, match="threshold"):
        noise_share(sigma, 1)


def test_the_ledgers_epsilon_agrees_with_an_independent_accountant():
    """The ledger's RDP figure for a distributed plan (one step per round at σ, rate q) against Opacus' PRV
    accountant (numerical privacy-loss distributions, another method): RDP is an upper bound, not far above."""
    from opacus.accountants import PRVAccountant

    sigma, q, rounds, delta = 1.0, 64 / 400, 40, 1e-5
    rdp = epsilon_of([(sigma, q, rounds)], delta)
    prv = PRVAccountant()
    prv.history = [(sigma, q, rounds)]
    independent = prv.get_epsilon(delta)
    assert independent <= rdp <= 1.35 * independent


def _round(**changes) -> RoundConfig:
    values = dict(study="t", phase="finetune", server_round=1, preset="tiny", plan="finetune:3:1", dp=True,
                  dp_mode="distributed", noise_multiplier=1.0, dp_batch=8, lr=0.05, max_site_examples=1000)
    return RoundConfig(**{**values, **changes})


def test_a_site_takes_one_linear_noisy_step_and_accounts_it_at_the_studys_sigma(tiny_cohort):
    from client.site_round import open_ledger, train_round
    from shared_models.cardiacnets import build_model
    from shared_models.model_arrays import numpy_state, state_layout
    from sitedata.site_config import load_site_config

    config_path = tiny_cohort / "site_configs" / "hospital-a.toml"
    global_state = numpy_state(build_model("tiny"))
    update, metrics = train_round(config_path, global_state, _round(secagg_threshold=0))
    assert metrics["declined"] == 1 and "SecAgg+" in metrics["reason"]  # never without SecAgg+

    update, metrics = train_round(config_path, global_state, _round(secagg_threshold=2))
    assert metrics["declined"] == 0 and metrics["steps"] == 1 and metrics["noise_shares"] == 2
    with open_ledger(load_site_config(config_path)) as ledger:
        (sigma, rate, steps), = ledger.history
    assert (sigma, steps) == (1.0, 1) and rate == pytest.approx(metrics["sample_rate"])
    assert metrics["epsilon"] == pytest.approx(epsilon_of([(1.0, rate, 1)], ledger.target_delta))
    parts = sorted({n.split(".")[0] for n, _ in state_layout("tiny")})
    layout = [*state_layout("tiny"), *((f"part.{p}", (1,)) for p in parts)]
    arrays = decode_weights(update, layout)
    weights = {p: float(arrays[f"part.{p}"][0]) for p in parts}
    assert {p for p, w in weights.items() if w} == {"ecg_encoder", "indicator_head", "disease_head"}
    assert all(w in (0.0, 1.0) for w in weights.values())  # equal weights: the mean is the sum over the count
    moved = arrays["disease_head.weight"] - global_state["disease_head.weight"]
    assert np.abs(moved).max() > 0


def test_the_site_reads_the_threshold_from_its_own_secagg_state_not_the_server(server_task_identity, monkeypatch):
    import client.client_app
    from client.client_app import FIT_CONFIG, SECAGG_THRESHOLD, secaggplus_when_asked

    seen = {}

    def record(message, context):
        seen["t"] = message.content.config_records[FIT_CONFIG][SECAGG_THRESHOLD]
        return message

    forged = RecordDict({FIT_CONFIG: ConfigRecord({SECAGG_THRESHOLD: 99})})
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    secaggplus_when_asked(Message(forged, dst_node_id=1, message_type="train"), context, record)
    assert seen["t"] == 0  # a plain message: no SecAgg+, whatever the server wrote

    # A SecAgg+ message: t comes from the state this site's SecAgg+ setup stage stored (stock mod bypassed here)
    monkeypatch.setattr(client.client_app, "secaggplus_mod", lambda message, context, call_next: call_next(message, context))
    forged = RecordDict({FIT_CONFIG: ConfigRecord({SECAGG_THRESHOLD: 99}), "secaggplus_configs": ConfigRecord({})})
    context.state.config_records[RECORD_KEY_STATE] = ConfigRecord({"threshold": 3})
    secaggplus_when_asked(Message(forged, dst_node_id=1, message_type="train"), context, record)
    assert seen["t"] == 3


def test_the_server_refuses_a_sum_with_fewer_noise_shares_than_the_threshold(tiny_dp_study, tmp_path):
    from protocol.round_record import RoundRecord, SiteReport
    from protocol.participants import Participants
    from server.strategy import make_strategy
    from server.site_roster import SiteRoster
    from server.study_config import load_study_config
    from shared_models.cardiacnets import build_model
    from shared_models.model_arrays import numpy_state
    import dataclasses

    (tmp_path / "study.toml").write_text(tiny_dp_study("distributed", 2))
    study = dataclasses.replace(load_study_config(tmp_path / "study.toml"), dp_mode="distributed")
    strategy = make_strategy(study.phases[0], study, SiteRoster({}, {}), numpy_state(build_model("tiny")))
    strategy.record = RoundRecord(study.phases[0].name, 1, started=0.0, participants=Participants())
    one_share = [SiteReport("a", "fit", 10, {"examples": 10, "noise_shares": 2, "declined": 0}),
                 SiteReport("b", "fit", 0, {"examples": 0, "declined": 1, "reason": "budget"})]
    assert not strategy._enough_noise_shares(one_share)
    assert "needs 2" in strategy.record.participants.outcome
    two_shares = one_share[:1] + [SiteReport("c", "fit", 0, {"examples": 0, "noise_shares": 2, "declined": 0})]
    assert strategy._enough_noise_shares(two_shares)  # a site with no patients still adds its share


def test_the_privacy_unit_is_the_patient_when_a_patient_has_several_windows(tiny_cohort):
    """With ecg.max_windows = 3 a person gives up to three ECG windows; DP-SGD samples people (one of their windows
    each time), so the ledger's sample rate and ε are per patient."""
    from client.site_round import _steps_per_epoch, phase_dataset
    from sitedata.site_config import load_site_config
    from sitedata.site_data import prepare_site
    from sitedata.site_dataset import SiteDataset

    path = tiny_cohort / "site_configs" / "hospital-a.toml"
    # the synthetic records are 10 s long: 5-s windows give each person two (the model's geometry is not needed here)
    path.write_text(path.read_text().replace("max_windows = 1", "max_windows = 3").replace("window_s = 10.0", "window_s = 5.0"))
    config = load_site_config(path)
    assert config.ecg.max_windows == 3
    site = prepare_site(config)
    windows = SiteDataset(site, "train")
    people = phase_dataset(site, "pretrain")
    train_people = [s for s in site.subjects if s.split == "train" and s.n_windows]
    assert max(s.n_windows for s in train_people) > 1  # the case this test is about
    assert len(people) == len(train_people) < len(windows)
    rate, _ = _steps_per_epoch(len(people), config.training.batch_size)
    assert rate == pytest.approx(1 / math.ceil(len(train_people) / config.training.batch_size))
    # each read of a person draws one of their windows; over many reads all of them appear
    several = next(i for i, (subject, _) in enumerate(people.dataset.items) if people.dataset.subjects[subject].n_windows > 1)
    seen = {people.dataset[several]["ecg"].numpy().tobytes() for _ in range(40)}
    assert len(seen) == people.dataset.subjects[people.dataset.items[several][0]].n_windows
