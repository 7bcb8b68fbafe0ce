"""The same ServerApp and ClientApp on both of Flower's engines: a tiny 3-site DP study deployed (SuperLink, TLS,
authenticated SuperNodes) and simulated (Ray) writes the same run database rows."""

import shutil

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from protocol.simulated_site import site_config_for_partition
from rundb.schema import Round, SiteMetric, Study
from protocol.site_metrics import MetricKey
from server.study_config import load_study_config

def test_a_virtual_site_is_the_partition_th_listed_config_and_a_real_site_keeps_its_own():
    listed = {"simulation-site-configs": "/a.toml,/b.toml"}
    assert site_config_for_partition({"partition-id": 1, "num-partitions": 2}, listed) == "/b.toml"
    assert site_config_for_partition({"site-config": "/own.toml"}, listed) is None  # no partition: not simulated
    with pytest.raises(ValueError, match="partition 2"):
        site_config_for_partition({"partition-id": 2}, listed)


def _rows(db):
    with Session(create_engine(f"sqlite:///{db}")) as session:
        study = session.scalars(select(Study)).one()
        rounds = [(r.phase, r.server_round, sorted(r.participants.get("trained", [])))
                  for r in session.scalars(select(Round).order_by(Round.phase, Round.server_round))]
        epsilon = {(m.site, m.server_round): round(m.epsilon, 6) for m in session.scalars(select(SiteMetric))
                   if m.kind == "fit" and m.epsilon is not None}
        return study.status, rounds, epsilon


def _study(root, tiny_cohort_template, text):
    shutil.copytree(tiny_cohort_template, root / "cohort")  # own ledgers: each engine's sites start at ε 0
    (root / "study.toml").write_text(text)
    return load_study_config(root / "study.toml")


@pytest.mark.slow
def test_deployment_and_simulation_write_the_same_rounds_participants_and_epsilon(tmp_path, tiny_cohort_template,
                                                                                 tiny_dp_study):
    from cardiacfl.deployment import run_study
    from cardiacfl.simulation import simulate_study

    text = tiny_dp_study("engines", rounds=2)
    deployed = run_study(_study(tmp_path / "deployed", tiny_cohort_template, text), tmp_path / "deployed" / "run")
    simulated = simulate_study(_study(tmp_path / "simulated", tiny_cohort_template, text), tmp_path / "simulated" / "run")
    status, rounds, epsilon = _rows(deployed.db)
    assert status == "finished"
    assert [r[:2] for r in rounds] == [("finetune", 1), ("finetune", 2)]
    assert all(trained == ["hospital-a", "hospital-b", "hospital-c"] for *_, trained in rounds)
    assert len(epsilon) == 6 and all(0 < e for e in epsilon.values())
    assert _rows(simulated.db) == (status, rounds, epsilon)
    with Session(create_engine(f"sqlite:///{simulated.db}")) as session:  # the lab holds all data: full matrix
        cross = {(m.metrics[MetricKey.MODEL], m.site) for m in session.scalars(select(SiteMetric).where(SiteMetric.kind == "cross"))}
    sites = ["hospital-a", "hospital-b", "hospital-c"]
    assert cross == {(f"{owner} (local)", site) for owner in sites for site in sites}
