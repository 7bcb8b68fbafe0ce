"""The lifetime privacy ledger: σ fixed for the whole plan, cumulative ε across rounds and restarts that an
independent RDP computation reproduces, declines past the budget, and a hash-chained, two-copy, locked file that
refuses deletion, edits and lost updates."""

import json

import pytest
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

from client.privacy_ledger import LedgerTampered, PlannedPhase, PrivacyLedger, epsilon_of, noise_for_plan

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
    saved = PrivacyLedger.open(path, site_id="s", target_epsilon=8.0, target_delta=1e-5)
    assert saved.history == history and [r["epsilon"] for r in saved.rounds] == reported


def test_a_round_past_the_budget_is_declined_with_a_reason(tmp_path):
    ledger = PrivacyLedger.open(tmp_path / "l.json", site_id="s", target_epsilon=2.0, target_delta=1e-5)
    ledger.plan([PlannedPhase("pretrain", 0.5, 4)])
    ledger.record([[ledger.noise_multiplier, 0.5, 4]], study="x", phase="pretrain", server_round=1, steps=4)
    reason = ledger.check(0.5, 4)
    assert reason and "budget" in reason and "2" in reason
    ledger.record_decline(study="x", phase="pretrain", server_round=2, reason=reason)
    entries = PrivacyLedger.open(tmp_path / "l.json", site_id="s", target_epsilon=2.0, target_delta=1e-5).entries
    assert [e["reason"] for e in entries if e["kind"] == "decline"] == [reason]


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


def _spent_ledger(tmp_path, **kwargs):
    path, copy = tmp_path / "state" / "ledger.json", tmp_path / "copy" / "ledger.json"
    ledger = PrivacyLedger.open(path, site_id="s", target_epsilon=8.0, target_delta=1e-5, copy_path=copy)
    sigma = ledger.plan([PlannedPhase("pretrain", 0.25, 16)])
    for server_round in (1, 2, 3, 4):
        ledger.record([[sigma, 0.25, 4]] * server_round, study="x", phase="pretrain", server_round=server_round, steps=4)
    return path, copy, ledger.epsilon


def _open(path, copy):
    return PrivacyLedger.open(path, site_id="s", target_epsilon=8.0, target_delta=1e-5, copy_path=copy)


def test_deleting_one_ledger_copy_is_refused_not_a_fresh_start(tmp_path):
    path, copy, spent = _spent_ledger(tmp_path)
    assert spent > 1 and _open(path, copy).epsilon == pytest.approx(spent)
    path.unlink()
    with pytest.raises(LedgerTampered, match="missing"):
        _open(path, copy)


@pytest.mark.parametrize("edit", ["steps", "sigma", "history"])
def test_an_edited_ledger_is_refused(tmp_path, edit):
    path, copy, _ = _spent_ledger(tmp_path)
    # steps 4 -> 1 and a past σ raised to 50, edited the same way in both copies: the hash chain catches it.
    # History emptied in the file the site reads: the untouched copy catches it.
    for target in (path, copy) if edit != "history" else (path,):
        data = json.loads(target.read_text())
        spends = [e for e in data["entries"] if e["kind"] == "spend"]
        if edit == "steps":
            spends[0]["mechanism"][2] = 1
        elif edit == "sigma":
            spends[0]["mechanism"][0] = 50.0
        else:
            data["entries"] = [e for e in data["entries"] if e["kind"] != "spend"]
        target.write_text(json.dumps(data))
    with pytest.raises(LedgerTampered, match="hash chain" if edit != "history" else "diverge"):
        _open(path, copy)


def test_diverging_copies_are_refused(tmp_path):
    path, copy, _ = _spent_ledger(tmp_path)
    data = json.loads(copy.read_text())
    data["entries"] = data["entries"][:-1]  # the copy lost the last round
    copy.write_text(json.dumps(data))
    with pytest.raises(LedgerTampered, match="diverge"):
        _open(path, copy)


def test_two_writers_at_once_keep_both_updates(tmp_path):
    import threading

    from client.privacy_ledger import locked_ledger

    path, copy = tmp_path / "state" / "ledger.json", tmp_path / "copy" / "ledger.json"
    kwargs = dict(site_id="s", target_epsilon=8.0, target_delta=1e-5, copy_path=copy)
    with locked_ledger(path, **kwargs) as ledger:
        ledger.plan([PlannedPhase("pretrain", 0.25, 16)])
    barrier = threading.Barrier(2)

    def one_round(server_round):
        barrier.wait()
        with locked_ledger(path, **kwargs) as ledger:
            history = ledger.history + [[ledger.noise_multiplier, 0.25, 4]]
            ledger.record(history, study="x", phase="pretrain", server_round=server_round, steps=4)

    threads = [threading.Thread(target=one_round, args=(r,)) for r in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["round"] for r in _open(path, copy).rounds) == [1, 2]


def test_reset_is_explicit_and_recorded(tmp_path):
    from client.privacy_ledger import reset_ledger

    path, copy, _ = _spent_ledger(tmp_path)
    path.unlink()
    with pytest.raises(ValueError, match="reason"):
        reset_ledger(path, site_id="s", reason=" ", copy_path=copy)
    reset_ledger(path, site_id="s", reason="disk restored from backup of 2026-11-30", copy_path=copy)
    ledger = _open(path, copy)
    assert ledger.epsilon == 0 and ledger.entries[0]["kind"] == "reset"
    assert "backup" in ledger.entries[0]["reason"] and ledger.entries[0]["kept"]  # the old copy is kept for audit


def test_a_ledger_of_the_earlier_single_file_format_keeps_its_spending(tmp_path):
    path, copy = tmp_path / "state" / "ledger.json", tmp_path / "copy" / "ledger.json"
    path.parent.mkdir()
    history = [[1.2, 0.25, 8], [1.2, 0.5, 4]]
    path.write_text(json.dumps({"version": 1, "site_id": "s", "target_epsilon": 8.0, "target_delta": 1e-5,
                                "noise_multiplier": 1.2, "history": history, "rounds": [], "declined": []}))
    ledger = _open(path, copy)
    assert ledger.history == history and ledger.noise_multiplier == 1.2
    assert ledger.epsilon == pytest.approx(epsilon_of(history, 1e-5)) and copy.is_file()


def test_an_empty_first_poisson_batch_is_an_empty_batch_not_a_crash(tiny_cohort_template):
    """Before: Opacus built the empty first batch from dataset[0]'s dict keys and raised TypeError (a small
    site's round failed about once in 60 at batch 3 of 6 samples)."""
    import torch
    from torch.utils.data import DataLoader

    from client.privacy import OpacusPrivatizer
    from client.site_round import phase_dataset
    from shared_models.cardiacnets import build_model
    from sitedata.site_config import load_site_config
    from sitedata.site_data import prepare_site

    site = prepare_site(load_site_config(tiny_cohort_template / "site_configs" / "hospital-a.toml"))
    data = phase_dataset(site, "finetune")
    model = build_model("tiny")
    privatizer = OpacusPrivatizer(noise_multiplier=1.0, max_grad_norm=1.0)
    _, _, loader = privatizer(model, torch.optim.SGD(model.parameters(), lr=0.1), DataLoader(data, batch_size=3))
    empty = loader.collate_fn([])  # what the loader yields when Poisson sampling picks nobody first
    privatizer.close()
    assert isinstance(empty, dict) and empty["ecg"].shape[0] == 0 and empty["ecg"].shape[1:] == data[0]["ecg"].shape


def test_a_budget_split_gives_each_phase_its_share_and_the_plan_ends_within_the_target(tmp_path):
    """The study's per-phase split (phase.budget_share): pretraining gets 20 %, fine-tuning the rest; each phase's
    σ brings the cumulative ε to its cumulative share, and the whole plan ends at or below the target."""
    from client.privacy_ledger import split_noise_for_plan

    plan = [PlannedPhase("pretrain", 0.25, 8, 0.2), PlannedPhase("finetune", 0.25, 48, 0.8)]
    sigmas = split_noise_for_plan(plan, 8.0, 1e-5)
    after_pretrain = epsilon_of([(sigmas["pretrain"], 0.25, 8)], 1e-5)
    total = epsilon_of([(sigmas["pretrain"], 0.25, 8), (sigmas["finetune"], 0.25, 48)], 1e-5)
    assert 0.9 * 1.6 <= after_pretrain <= 1.6 + 1e-9
    assert 0.95 * 8.0 <= total <= 8.0 + 1e-9
    ledger = PrivacyLedger.open(tmp_path / "ledger.json", site_id="s", target_epsilon=8.0, target_delta=1e-5)
    assert ledger.plan(plan, "finetune") == sigmas["finetune"] and ledger.plan(plan, "pretrain") == sigmas["pretrain"]
    with pytest.raises(ValueError, match="generator"):
        ledger.plan(plan, "generator")


def _rechain(entries: list[dict], sign) -> list[dict]:
    """The attack: rewrite the chain consistently, each entry's hash recomputed with `sign(body bytes)`."""
    previous = "0" * 64
    for entry in entries:
        entry["prev"] = previous
        body = json.dumps({k: v for k, v in entry.items() if k != "hash"}, sort_keys=True, separators=(",", ":")).encode()
        entry["hash"] = previous = sign(body)
    return entries


@pytest.mark.parametrize("signer", ["sha256", "another key"])
def test_rewriting_both_copies_consistently_needs_the_sites_ledger_key(tmp_path, signer):
    """Before: the chain was unkeyed SHA-256, so whoever could write both copies could lower the spending and
    recompute every hash; both copies agreed and the ledger opened."""
    import hashlib
    import hmac

    path, copy, spent = _spent_ledger(tmp_path)
    assert (path.parent / "ledger.key").stat().st_mode & 0o777 == 0o600
    sign = (lambda body: hashlib.sha256(body).hexdigest()) if signer == "sha256" else \
        (lambda body: hmac.new(b"x" * 32, body, hashlib.sha256).hexdigest())
    for target in (path, copy):
        data = json.loads(target.read_text())
        data["entries"] = _rechain([e for e in data["entries"] if e["kind"] != "spend"], sign)  # ε back to 0
        target.write_text(json.dumps(data))
    with pytest.raises(LedgerTampered, match="hash chain"):
        _open(path, copy)


def test_a_ledger_without_its_key_or_downgraded_to_the_unkeyed_format_is_refused(tmp_path):
    import hashlib

    path, copy, _ = _spent_ledger(tmp_path)
    key = path.parent / "ledger.key"
    saved = key.read_bytes()
    key.unlink()
    with pytest.raises(LedgerTampered, match="key"):
        _open(path, copy)
    key.write_bytes(saved)
    for target in (path, copy):  # the attacker's way round the key: an "earlier release's" unkeyed chain
        data = json.loads(target.read_text())
        data["version"] = 2
        data["entries"] = _rechain([e for e in data["entries"] if e["kind"] != "spend"],
                                   lambda body: hashlib.sha256(body).hexdigest())
        target.write_text(json.dumps(data))
    with pytest.raises(LedgerTampered, match="unkeyed"):
        _open(path, copy)


def test_an_unkeyed_ledger_of_the_earlier_release_is_keyed_once_and_keeps_its_spending(tmp_path):
    import hashlib

    path, copy, spent = _spent_ledger(tmp_path)
    (path.parent / "ledger.key").unlink()
    for target in (path, copy):  # what the earlier release wrote: the same entries, unkeyed SHA-256
        data = json.loads(target.read_text())
        data["version"] = 2
        data["entries"] = _rechain(data["entries"], lambda body: hashlib.sha256(body).hexdigest())
        target.write_text(json.dumps(data))
    ledger = _open(path, copy)
    assert ledger.epsilon == pytest.approx(spent) and ledger.entries[-1]["kind"] == "migrated"
    assert (path.parent / "ledger.key").is_file() and path.with_name(path.name + ".v2").is_file()
    assert _open(path, copy).epsilon == pytest.approx(spent)
