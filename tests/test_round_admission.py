"""Round admission (protocol/round_admission.py): the lab learns who will train before anyone trains, a round
with fewer than secagg.min_contributors contributors never starts, and a lab whose SecAgg+ mask generator differs
from the sites' is refused before masking. Each test replays a finding of the review."""

import importlib
import re

import pytest
from flwr.common import ConfigRecord, Context, Message, MessageType, RecordDict

from protocol import mask_prg, round_admission
from protocol.round_admission import Answer, decide
from protocol.round_contract import RoundConfig

pytestmark = pytest.mark.usefixtures("server_task_identity")


def _round(**overrides):
    values = dict(study="t", phase="finetune", server_round=1, preset="tiny", plan="finetune:2:1")
    return RoundConfig(**(values | overrides))


def _budget(config, epsilon: float) -> None:
    config.write_text(re.sub(r"target_epsilon = [0-9.]+", f"target_epsilon = {epsilon}", config.read_text()))


def test_one_contributor_never_makes_a_round_and_a_part_trained_by_one_site_is_frozen():
    """Before: a SecAgg+ round with one real contributor exposed that site's update (the others sent zeros)."""
    alone = decide([Answer("a", True, parts=frozenset({"ecg_encoder"})), Answer("b", False, "budget")], [], 2)
    assert alone.stop and not alone.admitted and "b declined: budget" in alone.stop and "at least 2" in alone.stop
    imaging = decide([Answer("a", True, parts=frozenset({"ecg_encoder", "cmr_encoder"})),
                      Answer("b", True, parts=frozenset({"ecg_encoder"})),
                      Answer("c", True, parts=frozenset({"ecg_encoder"}))], ["d"], 2)
    assert not imaging.stop and imaging.admitted == ["a", "b", "c"] and imaging.frozen_parts == ["cmr_encoder"]
    assert imaging.silent == ["d"]
    generator = decide([Answer("a", True, parts=frozenset({"generator"})), Answer("b", True)], [], 2)
    assert generator.stop  # one imaging site: the generator round does not start


def test_a_site_that_cannot_afford_the_plan_declines_at_admission_and_spends_nothing(tiny_cohort):
    """Before: `ValueError: no noise multiplier reaches ε=0.05` raised inside the SecAgg+ mod and failed the
    round for every site, after the others had spent ε."""
    from client.site_round import admission, open_ledger, train_round
    from shared_models.cardiacnets import build_model
    from shared_models.model_arrays import numpy_state
    from sitedata.site_config import load_site_config

    config = tiny_cohort / "site_configs" / "hospital-b.toml"
    _budget(config, 0.05)
    reason, parts, epsilon = admission(config, _round())
    assert reason and "cannot pay" in reason and parts == [] and epsilon == 0.0
    with open_ledger(load_site_config(config)) as ledger:
        assert ledger.epsilon == 0.0 and [e["kind"] for e in ledger.entries] == ["decline"]
    _, metrics = train_round(config, numpy_state(build_model("tiny")), _round())  # asked anyway: a decline
    assert metrics["declined"] == 1 and "cannot pay" in metrics["reason"]

    ok = tiny_cohort / "site_configs" / "hospital-a.toml"
    reason, parts, epsilon = admission(ok, _round())
    assert reason is None and {"disease_head", "indicator_head"} <= set(parts)


def test_the_strategy_stops_a_round_before_anyone_trains(tiny_dp_study, tmp_path):
    from server.site_roster import SiteRoster
    from server.strategy import make_strategy
    from server.study_config import load_study_config
    from shared_models.cardiacnets import build_model
    from shared_models.model_arrays import numpy_state

    (tmp_path / "study.toml").write_text(tiny_dp_study("admission", 2).replace("enabled = false", "enabled = true"))
    study = load_study_config(tmp_path / "study.toml")
    roster = SiteRoster({1: "hospital-a", 2: "hospital-b"}, {})
    strategy = make_strategy(study.phases[0], study, roster, numpy_state(build_model("tiny")))
    answers = {1: Answer("hospital-a", True, parts=frozenset({"disease_head"}), epsilon=0.0),
               2: Answer("hospital-b", False, "no noise multiplier reaches ε=0.05", epsilon=0.0)}
    assert not strategy.admit(1, answers, [])
    record = strategy.fit_record()
    assert not record.participants.aggregated and "did not start" in record.participants.outcome
    assert record.participants.declined == {"hospital-b": "no noise multiplier reaches ε=0.05"}
    assert record.participants.trained == [] and roster.has_declined(2)
    declined = [r for r in record.site_reports if r.site == "hospital-b"]
    assert declined and declined[0].metrics["declined"] == 1

    # a forged answer (node 1 claiming to be hospital-b) is dropped, not counted
    strategy = make_strategy(study.phases[0], study, SiteRoster({1: "hospital-a", 2: "hospital-b"}, {}),
                             numpy_state(build_model("tiny")))
    assert not strategy.admit(2, {1: Answer("hospital-b", True, parts=frozenset({"disease_head"})),
                                  2: Answer("hospital-b", True, parts=frozenset({"disease_head"}))}, [])
    assert "hospital-a" in strategy.fit_record().participants.rejected


def test_a_lab_with_flowers_stock_mask_generator_is_declined_before_masking(tiny_cohort, monkeypatch):
    """Before: with ChaCha20 masks on the sites and Flower's generator at the lab, every round aggregated to
    values off by 20-40 per weight, with no error."""
    from flwr.common.secure_aggregation import secaggplus_utils

    from client.client_app import answer_round_admission
    from server.round_admission import lab_mask_generator

    workflow = importlib.import_module("flwr.server.workflow.secure_aggregation.secaggplus_workflow")
    monkeypatch.setattr(workflow, "pseudo_rand_gen", secaggplus_utils.pseudo_rand_gen)  # a lab on the stock one
    stock = lab_mask_generator(True)
    assert stock != mask_prg.NAME and "pseudo_rand_gen" in stock

    context = Context(run_id=1, node_id=5, state=RecordDict(), run_config={},
                      node_config={"site-config": str(tiny_cohort / "site_configs" / "hospital-a.toml")})

    def ask(generator: str) -> Answer:
        query = _round().to_record() | {round_admission.MASK_PRG: generator}
        message = Message(RecordDict({round_admission.RECORD: ConfigRecord(query)}), dst_node_id=5,
                          message_type=MessageType.QUERY)
        reply = answer_round_admission(message, context, lambda m, c: pytest.fail("the query went on to the app"))
        return Answer.from_record(reply.content.config_records[round_admission.RECORD])

    refused = ask(stock)
    assert not refused.accept and stock in refused.reason and mask_prg.NAME in refused.reason
    assert ask(mask_prg.NAME).accept  # the generator the sites use


@pytest.mark.slow
def test_a_two_site_secagg_study_where_one_site_cannot_pay_stops_before_anyone_spends(tmp_path, tiny_cohort_template):
    """The review's replay, in Flower's Simulation Engine: hospital-b's budget is ε 0.05. Before: both rounds
    failed inside SecAgg+, both sites listed as dropped, hospital-a spent ε 5.29 then 7.94 of its 8."""
    import shutil

    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    from cardiacfl.simulation import simulate_study
    from client.site_round import open_ledger
    from rundb.schema import Round, SiteMetric, Study
    from server.study_config import load_study_config
    from sitedata.site_config import load_site_config

    shutil.copytree(tiny_cohort_template, tmp_path / "cohort")
    _budget(tmp_path / "cohort" / "site_configs" / "hospital-b.toml", 0.05)
    sites = ", ".join(f'"cohort/site_configs/hospital-{s}.toml"' for s in "ab")
    (tmp_path / "study.toml").write_text(
        f'[study]\nname = "unaffordable"\npreset = "tiny"\nsites = [{sites}]\ndp = true\n\n'
        '[secagg]\nenabled = true\ntimeout_s = 60\n\n[[phase]]\nname = "finetune"\nrounds = 2\nlocal_epochs = 1\n')
    paths = simulate_study(load_study_config(tmp_path / "study.toml"), tmp_path / "run")
    with Session(create_engine(f"sqlite:///{paths.db}")) as session:
        assert session.scalars(select(Study)).one().status == "finished"
        rounds = list(session.scalars(select(Round).where(Round.phase == "finetune").order_by(Round.server_round)))
        metrics = list(session.scalars(select(SiteMetric)))
    assert [r.server_round for r in rounds] == [1, 2]
    for record in rounds:
        assert "did not start" in record.participants["outcome"] and not record.participants.get("trained")
        assert "cannot pay" in record.participants["declined"]["hospital-b"]
        assert not record.participants.get("dropped")
    assert not any(m.site == "hospital-a" and m.kind == "fit" for m in metrics)  # never asked to train
    assert not any("loss" in m.metrics for m in metrics if m.kind == "fit")
    assert not any("loss" in m.metrics for m in metrics if m.kind == "evaluate" and m.metrics.get("withheld"))
    ledger_a = load_site_config(tmp_path / "cohort" / "site_configs" / "hospital-a.toml")
    with open_ledger(ledger_a) as ledger:
        assert ledger.epsilon == 0.0 and not ledger.rounds
