"""The lifetime privacy ledger: σ fixed for the whole plan, cumulative ε across rounds and restarts that an
independent RDP computation reproduces, declines past the budget, atomic persistence."""

import json

import pytest
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

from client.privacy_ledger import PlannedPhase, PrivacyLedger, epsilon_of, noise_for_plan

ALPHAS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))


def independent_epsilon(history, delta):
    rdp = sum(compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=ALPHAS) for sigma, q, steps in history)
    return get_privacy_spent(orders=ALPHAS, rdp=rdp, delta=delta)[0]


def test_plan_ends_at_the_target_and_per_round_epsilon_would_not():
    plan = [PlannedPhase("pretrain", 0.25, 24), PlannedPhase("finetune", 0.3, 12)]
    sigma = noise_for_plan(plan, 8.0, 1e-5)
    total = epsilon_of([(sigma, 0.25, 24), (sigma, 0.3, 12)], 1e-5)
    assert 7.5 < total <= 8.0


def test_multi_round_epsilon_matches_an_independent_computation_across_restarts(tmp_path):
    path = tmp_path / "ledger.json"
    ledger = PrivacyLedger.open(path, site_id="s", target_epsilon=8.0, target_delta=1e-5)
    sigma = ledger.plan([PlannedPhase("pretrain", 0.25, 12), PlannedPhase("finetune", 0.5, 6)])
    history = []
    reported = []
    for server_round, (rate, steps, phase) in enumerate([(0.25, 4, "pretrain"), (0.25, 4, "pretrain"), (0.25, 4, "pretrain"),
                                                         (0.5, 2, "finetune"), (0.5, 4, "finetune")], start=1):
        ledger = PrivacyLedger.open(path, site_id="s", target_epsilon=8.0, target_delta=1e-5)  # a restart each round
        assert ledger.noise_multiplier == sigma  # fixed once, never recomputed
        assert ledger.check(rate, steps) is None
        history.append([sigma, rate, steps])
        reported.append(ledger.record([list(h) for h in history], study="x", phase=phase, server_round=server_round, steps=steps))
    assert reported == sorted(reported) and len(set(reported)) == len(reported)  # cumulative, strictly growing
    assert reported[-1] == pytest.approx(independent_epsilon(history, 1e-5), rel=1e-9)
    assert reported[-1] <= 8.0
    saved = json.loads(path.read_text())
    assert saved["history"] == history and [r["epsilon"] for r in saved["rounds"]] == reported


def test_a_round_past_the_budget_is_declined_with_a_reason(tmp_path):
    ledger = PrivacyLedger.open(tmp_path / "l.json", site_id="s", target_epsilon=2.0, target_delta=1e-5)
    ledger.plan([PlannedPhase("pretrain", 0.5, 4)])
    ledger.record([[ledger.noise_multiplier, 0.5, 4]], study="x", phase="pretrain", server_round=1, steps=4)
    reason = ledger.check(0.5, 4)
    assert reason and "budget" in reason and "2" in reason
    ledger.record_decline(study="x", phase="pretrain", server_round=2, reason=reason)
    assert PrivacyLedger.open(tmp_path / "l.json", site_id="s", target_epsilon=2.0, target_delta=1e-5).declined[0]["reason"] == reason


def test_ledger_refuses_another_site_and_a_shrinking_history(tmp_path):
    ledger = PrivacyLedger.open(tmp_path / "l.json", site_id="a", target_epsilon=8.0, target_delta=1e-5)
    ledger.plan([PlannedPhase("pretrain", 0.5, 4)])
    ledger.record([[ledger.noise_multiplier, 0.5, 4]], study="x", phase="pretrain", server_round=1, steps=4)
    with pytest.raises(ValueError, match="belongs to site"):
        PrivacyLedger.open(tmp_path / "l.json", site_id="b", target_epsilon=8.0, target_delta=1e-5)
    with pytest.raises(ValueError, match="does not extend"):
        ledger.record([], study="x", phase="pretrain", server_round=2, steps=0)


def test_planned_sample_rate_and_steps_are_what_opacus_uses(tiny_cohort_template):
    """The ledger's budget check must use the sample rate and step count Opacus will actually account."""
    from torch.utils.data import DataLoader

    from client.privacy import OpacusPrivatizer
    from sitedata.site_config import load_site_config
    from sitedata.site_data import prepare_site
    from client.site_round import _steps_per_epoch, phase_dataset
    from shared_models.cardiacnets import build_model
    from shared_models.training import TrainOptions, train_phase

    site = prepare_site(load_site_config(tiny_cohort_template / "site_configs" / "hospital-a.toml"))
    data = phase_dataset(site, "finetune")
    rate, steps = _steps_per_epoch(len(data), 3)
    privatizer = OpacusPrivatizer(noise_multiplier=1.0, max_grad_norm=1.0)
    train_phase(build_model("tiny"), DataLoader(data, batch_size=3), TrainOptions(phase="finetune"), privatize=privatizer)
    privatizer.close()
    assert privatizer.history == [(1.0, pytest.approx(rate), steps)]
