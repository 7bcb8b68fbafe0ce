"""Attacks on a site's privacy, replayed: each test is one finding of the security review and fails to succeed
now. The network-facing ones (the Control API, rogue keys, unsigned apps) are in test_deployment.py."""

import dataclasses
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters

from torch.utils.data import DataLoader

from protocol.round_contract import RoundConfig
from protocol.codec import check_update, encode_update


def _dp_weights_after_one_round(site, seed):
    """Train the same model on the same data with the same server seed under DP; return the weights."""
    from client.privacy import OpacusPrivatizer
    from sitedata.site_dataset import SiteDataset
    from shared_models.cardiacnets import build_model
    from shared_models.training import TrainOptions, train_phase

    torch.manual_seed(0)
    model = build_model("tiny")
    loader = DataLoader(SiteDataset(site, "train"), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(seed))
    privatizer = OpacusPrivatizer(noise_multiplier=1.0, max_grad_norm=1.0)
    train_phase(model, loader, TrainOptions(phase="finetune", finetune_mode="linear", seed=seed), privatize=privatizer)
    privatizer.close()
    return torch.cat([p.detach().flatten() for p in model.disease_head.parameters()])


def test_the_server_cannot_replay_a_sites_dp_noise(tiny_cohort_template):
    """Before: noise came from torch's global RNG seeded with the server's seed, so a replay reproduced it."""
    from sitedata.site_config import load_site_config
    from sitedata.site_data import prepare_site

    site = prepare_site(load_site_config(tiny_cohort_template / "site_configs" / "hospital-a.toml"))
    first, second = _dp_weights_after_one_round(site, seed=7), _dp_weights_after_one_round(site, seed=7)
    assert not torch.equal(first, second)


@pytest.fixture
def site_b(tiny_cohort):
    return tiny_cohort / "site_configs" / "hospital-b.toml"


def _round(**overrides):
    values = dict(study="t", phase="finetune", server_round=1, preset="tiny", plan="finetune:1:1")
    return RoundConfig(**(values | overrides))


@pytest.mark.parametrize("asked, reason", [
    (dict(dp=False), "requires DP"),
    (dict(max_grad_norm=100.0), "clipping norm"),
    (dict(target_epsilon=1000.0), "privacy budget"),
    (dict(local_epochs=50, plan="finetune:1:50"), "local epochs"),
])
def test_a_round_asking_for_less_privacy_is_declined(site_b, asked, reason):
    """Before: a round config with dp=False made a site train with no noise and no ledger entry."""
    from client.site_round import open_ledger, train_round
    from shared_models.cardiacnets import build_model
    from shared_models.model_arrays import numpy_state
    from sitedata.site_config import load_site_config

    state = numpy_state(build_model("tiny"))
    arrays, metrics = train_round(site_b, state, _round(**asked))
    assert metrics["declined"] == 1 and reason in metrics["reason"] and metrics["examples"] == 0
    assert set(check_update(arrays, state, 1.0).values()) == {0.0}  # no part counts as trained
    with open_ledger(load_site_config(site_b)) as ledger:
        assert ledger.history == []  # nothing spent, nothing trained


NO_SITES = SimpleNamespace(num_available=lambda: 0, sample=lambda **_: [])  # a client manager: nobody to ask


def _strategy(*, secagg=False, node_sites=None, ratio=10.0, last_epsilon=None):
    from server.site_roster import SiteRoster
    from server.strategy import make_strategy
    from server.study_config import PhasePlan, load_study_config

    study = load_study_config("studies/demo.toml")
    study = dataclasses.replace(study, secagg=dataclasses.replace(study.secagg, enabled=secagg), max_update_ratio=ratio)
    previous = {"ecg_encoder.w": np.full(4, 1.0, np.float32), "generator.w": np.ones(2, np.float32)}
    strategy = make_strategy(PhasePlan(name="pretrain"), study, SiteRoster(node_sites, last_epsilon), previous)
    strategy.configure_fit(1, None, NO_SITES)
    return strategy


def _reply(node_id, update, **metrics):
    return (SimpleNamespace(node_id=node_id), FitRes(Status(Code.OK, ""), ndarrays_to_parameters(update), 1, metrics))


def _honest(value=2.0):
    return encode_update({"ecg_encoder.w": np.full(4, value), "generator.w": np.ones(2)}, {"ecg_encoder": 100}, 1000)


def test_a_node_cannot_speak_for_another_site():
    """Before: a node reporting site="hospital-a" and declining got the real hospital-a dropped."""
    strategy = _strategy(node_sites={1: "hospital-a", 2: "hospital-b"})
    strategy.aggregate_fit(1, [_reply(1, _honest(), site="hospital-a", examples=100),
                               _reply(2, _honest(), site="hospital-a", declined=1, reason="budget", examples=0),
                               _reply(3, _honest(), site="hospital-c", examples=100)], [])
    assert "hospital-a" not in strategy.roster.declined_sites
    record = strategy.take_round()
    assert record.participants.trained == ["hospital-a"]
    assert "claims to be 'hospital-a'" in record.participants.rejected["hospital-b"]
    assert "not a registered site" in record.participants.rejected["node-3"]
    assert [r.site for r in record.site_reports] == ["hospital-a"]


def _nan(v):
    v = v.copy()
    v[0] = np.nan
    return v


def _inf(v):
    v = v.copy()
    v[1] = np.inf
    return v


def _huge(v):
    v = v.copy()
    v[:-2] *= 1e12  # the weights, not the part weights
    return v


def _negative_part_weight(v):
    v = v.copy()
    v[-2] = -0.999  # the last values are the part weights (protocol/codec.py)
    return v


@pytest.mark.parametrize("poison, why", [
    (lambda u: [_nan(u[0])], "non-finite"),
    (lambda u: [_inf(u[0])], "non-finite"),
    (lambda u: [_huge(u[0])], "update norm"),
    (lambda u: [_negative_part_weight(u[0])], "outside [0, 1]"),
    (lambda u: [u[0][:-2]], "expected one vector of"),
    (lambda u: [u[0], u[0]], "expected one vector of"),
    (lambda u: [u[0].reshape(2, -1)], "expected one vector of"),
])
def test_poisoned_updates_are_dropped_and_the_round_goes_on(poison, why):
    """Before: NaN/inf entered the global model, x1e12 passed, a negative part weight cancelled another site,
    a wrong shape failed the study."""
    strategy = _strategy()
    parameters, _ = strategy.aggregate_fit(1, [_reply(1, _honest(2.0), site="hospital-a", examples=100),
                                               _reply(2, poison(_honest(3.0)), site="hospital-b", examples=100)], [])
    assert parameters is not None
    assert np.allclose(strategy.global_state["ecg_encoder.w"], 2.0)  # the honest site's update alone
    participants = strategy.take_round().participants
    assert why in participants.rejected["hospital-b"] and participants.failed == 1


def test_a_secagg_aggregate_that_fails_its_checks_leaves_the_model_unchanged():
    strategy = _strategy(secagg=True)
    before = dict(strategy.global_state)
    parameters, _ = strategy.aggregate_fit(1, [_reply(1, [_nan(_honest(2.0)[0])], site="hospital-a", examples=100)], [])
    assert parameters is None and all(np.array_equal(before[k], v) for k, v in strategy.global_state.items())
    record = strategy.take_round()
    assert "non-finite" in record.participants.outcome and record.participants.trained == []


def test_the_server_flags_a_site_whose_lifetime_epsilon_went_down():
    strategy = _strategy(last_epsilon={"hospital-a": 7.96})
    strategy.aggregate_fit(1, [_reply(1, _honest(), site="hospital-a", examples=100, epsilon=0.4)], [])
    assert "went down from 7.960 to 0.400" in strategy.take_round().participants.flags["hospital-a"]


def test_a_round_flower_moved_past_is_recorded_as_not_aggregated():
    """SecAgg+ that cannot unmask never calls aggregate_fit: the round's record says so and names who was asked."""
    strategy = _strategy()
    strategy.asked = {"hospital-a", "hospital-b"}
    record = strategy.take_round()
    assert not record.participants.aggregated and record.participants.dropped == ["hospital-a", "hospital-b"]
    assert record.seconds is not None


def test_per_site_validation_metrics_need_enough_patients_per_class(tiny_cohort):
    """Before: every evaluate round sent 40+ metrics, a disease AUROC over a handful of patients."""
    from client.site_round import evaluate_round
    from shared_models.cardiacnets import build_model
    from shared_models.model_arrays import numpy_state

    config = tiny_cohort / "site_configs" / "hospital-b.toml"  # the tiny cohort's site with a validation split
    state = numpy_state(build_model("tiny"))
    loss, examples, metrics = evaluate_round(config, state, _round(server_round=2))
    # Before: below the floor the loss and the exact count still left. Now: "withheld" and a coarse count.
    assert (loss, examples) == (0.0, 0) and set(metrics) <= {"withheld", "count_band", "site", "phase", "epsilon"}
    config.write_text(re.sub(r"\[privacy\]", "[privacy]\nmin_eval_count = 1", config.read_text()))
    from client.site_round import _site

    _site.cache_clear()
    _, examples, revealing = evaluate_round(config, state, _round(server_round=3))
    assert any(k.startswith(("r2/", "auroc/")) for k in revealing)  # the same split with the floor at 1
    assert examples > 0 and "loss" in revealing


def test_secagg_masks_come_from_the_whole_secret_and_still_cancel():
    """Before: masks came from the secret folded to 32 bits, so two secrets with the same fold gave the same
    masks (2^32 guesses recover them). Now the whole secret keys ChaCha20, and masked sums still unmask exactly."""
    import importlib

    from flwr.common.secure_aggregation import secaggplus_utils
    from flwr.common.secure_aggregation.ndarrays_arithmetic import parameters_addition, parameters_mod, parameters_subtraction
    from flwr.common.secure_aggregation.quantization import dequantize, quantize

    import client.client_app  # noqa: F401  (installs the client end)
    import server.secure_aggregation  # noqa: F401  (installs the server end)
    from protocol.mask_prg import chacha20_masks

    for module in ("flwr.client.mod.secure_aggregation.secaggplus_mod", "flwr.server.workflow.secure_aggregation.secaggplus_workflow"):
        assert importlib.import_module(module).pseudo_rand_gen is chacha20_masks

    secret = bytes(range(32))
    twin = bytearray(secret)
    twin[0] ^= 0xFF
    twin[4] ^= 0xFF  # same 32-bit fold
    shapes = [(5,), (2, 3)]
    flower_a, flower_b = secaggplus_utils.pseudo_rand_gen(secret, 2**32, shapes), secaggplus_utils.pseudo_rand_gen(bytes(twin), 2**32, shapes)
    assert all(np.array_equal(a, b) for a, b in zip(flower_a, flower_b))  # the weakness, in Flower's own function
    ours_a, ours_b = chacha20_masks(secret, 2**32, shapes), chacha20_masks(bytes(twin), 2**32, shapes)
    assert not any(np.array_equal(a, b) for a, b in zip(ours_a, ours_b))
    assert all(np.array_equal(a, b) for a, b in zip(ours_a, chacha20_masks(secret, 2**32, shapes)))

    # Three sites mask their quantized updates pairwise and privately, as the SecAgg+ mod does; the server
    # removes the private masks; the pairwise ones cancel and the sum comes back exactly.
    rng = np.random.default_rng(0)
    updates = [[rng.uniform(-1, 1, s).astype(np.float32) for s in shapes] for _ in range(3)]
    mod, clip, levels = 2**32, 8.0, 2**22
    pair_key = {(i, j): bytes([i, j]) * 16 for i in range(3) for j in range(3) if i < j}
    def quantized(update):
        return [q.astype(np.int64) for q in quantize(update, clip, levels)]

    levels_of = [quantized(u) for u in updates]  # quantizing rounds stochastically: do it once per site
    masked = []
    for i, update in enumerate(levels_of):
        vector = parameters_addition(update, chacha20_masks(bytes([9, i]) * 16, mod, shapes))
        for j in range(3):
            if j != i:
                mask = chacha20_masks(pair_key[min(i, j), max(i, j)], mod, shapes)
                vector = parameters_addition(vector, mask) if i > j else parameters_subtraction(vector, mask)
        masked.append(parameters_mod(vector, mod))
    total = masked[0]
    for vector in masked[1:]:
        total = parameters_addition(total, vector)
    for i in range(3):
        total = parameters_subtraction(total, chacha20_masks(bytes([9, i]) * 16, mod, shapes))
    summed = dequantize(parameters_mod(total, mod), clip, levels)
    expected = dequantize(parameters_mod(parameters_addition(parameters_addition(*levels_of[:2]), levels_of[2]), mod), clip, levels)
    assert all(np.array_equal(a, b) for a, b in zip(summed, expected))


def test_a_dp_round_sends_no_exact_training_loss_and_a_noised_one_only_within_the_budget(site_b):
    """Before: every DP fit reply carried the round's exact mean training loss, outside the DP guarantee."""
    from client.site_round import _site, open_ledger, train_round
    from shared_models.cardiacnets import build_model
    from shared_models.model_arrays import numpy_state
    from sitedata.site_config import load_site_config

    state = numpy_state(build_model("tiny"))
    _, metrics = train_round(site_b, state, _round(plan="finetune:3:1"))
    assert metrics["declined"] == 0 and "loss" not in metrics and "dp_loss" not in metrics  # the policy default
    spent = metrics["epsilon"]

    site_b.write_text(re.sub(r"\[privacy\]", "[privacy]\nloss_noise_multiplier = 50.0", site_b.read_text()))
    _site.cache_clear()
    _, metrics = train_round(site_b, state, _round(server_round=2, plan="finetune:3:1"))
    assert "loss" not in metrics and math.isfinite(metrics["dp_loss"])  # noised, under its own key
    with open_ledger(load_site_config(site_b)) as ledger:
        released = [e for e in ledger.rounds if e["phase"] == "finetune:loss"]
        assert [e["mechanism"] for e in released] == [[50.0, 1.0, 1]]  # its ε is in the lifetime figure
        assert metrics["epsilon"] == pytest.approx(ledger.epsilon) and ledger.epsilon > spent
