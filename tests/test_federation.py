"""Federation pieces without a running SuperLink: what a site sends, part-weighted averaging, provisioning."""

import stat

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from protocol.codec import decode_mean, decode_weights, encode_update, encode_weights

ALLOWED_METRICS = {"site", "phase", "round", "declined", "reason", "noise_multiplier", "max_grad_norm", "delta",
                   "target_epsilon", "sample_rate", "epsilon", "examples", "dp_loss", "steps", "seconds", "startup_s", "work_s", "prepare_s"}


def test_part_weighted_average_counts_only_sites_that_trained_a_part():
    previous = {"ecg_encoder.w": np.zeros(3, np.float32), "generator.w": np.full(2, 5.0, np.float32)}
    site_a = encode_update({"ecg_encoder.w": np.ones(3), "generator.w": np.full(2, 2.0)}, {"ecg_encoder": 100, "generator": 100}, 1000)
    site_c = encode_update({"ecg_encoder.w": np.full(3, 4.0), "generator.w": np.full(2, 9.0)}, {"ecg_encoder": 300}, 1000)
    mean = [(site_a[0] + site_c[0]) / 2]
    state, weights = decode_mean(mean, previous)
    assert np.allclose(state["ecg_encoder.w"], (100 * 1 + 300 * 4) / 400)  # example-weighted over both sites
    assert np.allclose(state["generator.w"], 2.0)  # only site a trained the generator
    nobody = decode_mean([np.zeros_like(mean[0])], previous)[0]
    assert np.array_equal(nobody["generator.w"], previous["generator.w"])  # untrained part keeps the global weights
    assert weights["ecg_encoder"] == pytest.approx(0.2)


def test_a_site_sends_only_model_arrays_and_aggregate_metrics(tiny_cohort, physionet):
    from client.client_app import SiteClient
    from shared_models.cardiacnets import build_model
    from shared_models.model_arrays import numpy_state, state_layout

    config = tiny_cohort / "site_configs" / "hospital-a.toml"
    model = build_model("tiny")
    parameters = [v.numpy() for v in model.state_dict().values()]
    client = SiteClient(str(config), None, run_id=1)
    round_config = {"study": "t", "phase": "finetune", "server_round": 1, "preset": "tiny",
                    "plan": "finetune:1:1", "local_epochs": 1, "dp": True, "max_site_examples": 1000}
    global_state = numpy_state(model)
    vector, weight, metrics = client.fit(encode_weights(global_state), round_config)
    assert len(vector) == 1 and vector[0].ndim == 1  # the wire format: one vector (protocol/codec.py)
    names = [name for name, _ in state_layout("tiny")]
    parts = sorted({n.split(".")[0] for n in names})
    layout = [*state_layout("tiny"), *((f"part.{p}", (1,)) for p in parts)]
    arrays = list(decode_weights(vector, layout).values())
    assert weight == 1 and len(arrays) == len(names) + len(parts)
    for array, original in zip(arrays, parameters):
        assert array.shape == original.shape  # model-shaped: nothing per subject
    assert all(a.shape == (1,) for a in arrays[len(names):])
    assert set(metrics) <= ALLOWED_METRICS and all(isinstance(v, (int, float, str)) for v in metrics.values())
    assert metrics["epsilon"] > 0 and metrics["site"] == "hospital-a"
    subject_ids = (tiny_cohort / "hospital-a" / "manifest.csv").read_text()
    assert not any(isinstance(v, str) and v and v in subject_ids for k, v in metrics.items() if k not in ("site", "phase", "reason"))

    assert "loss" not in metrics  # the exact training loss of a DP round stays at the site

    loss, examples, eval_metrics = client.evaluate(encode_weights(global_state), round_config)
    assert all(isinstance(v, (int, float, str)) for v in eval_metrics.values())
    assert not any(k.startswith(("pred", "subject")) for k in eval_metrics)
    # The site's own fine-tuned model stays in its cache; its validation split (a handful of the tiny cohort's
    # subjects) is below the release floor, so neither model's loss nor the exact count leaves.
    from client.site_round import local_model_path
    from sitedata.site_config import load_site_config

    assert local_model_path(load_site_config(config)).is_file()
    assert (loss, examples) == (0.0, 0) and eval_metrics["withheld"] == 1 and eval_metrics["count_band"] == "<20"
    assert not any(k.startswith("local/") or k == "loss" for k in eval_metrics)


def test_provisioning_writes_private_keys_0600_and_a_loopback_certificate(tmp_path):
    from cardiacfl.provision import provision

    paths = provision(tmp_path, ["site-a", "site-b"])
    private = [paths["superlink_key"], tmp_path / "lab" / "ca.key"] + [paths["kits"][s] / f"{s}.key" for s in ("site-a", "site-b")]
    for key in private:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    cert = x509.load_pem_x509_certificate(paths["superlink_cert"].read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    ca = x509.load_pem_x509_certificate(paths["ca"].read_bytes())
    cert.verify_directly_issued_by(ca)
    kit = paths["kits"]["site-a"]
    load_ssh_private_key((kit / "site-a.key").read_bytes(), password=None)
    assert load_ssh_public_key((kit / "site-a.pub").read_bytes()).curve.name == "secp256r1"
    assert not list(kit.glob("*superlink*")) and not (kit / "ca.key").exists()  # a kit holds only what a site needs


def test_study_config_errors_name_file_and_key(tmp_path):
    from server.study_config import StudyConfigError, load_study_config

    path = tmp_path / "s.toml"
    path.write_text('[study]\nname = "x"\n[[phase]]\nname = "pretrain"\nstrategy = "fedsgd"\n')
    with pytest.raises(StudyConfigError, match=r"s.toml: phase\[0\].strategy"):
        load_study_config(path)
    demo = load_study_config("studies/demo.toml")  # the mission's flow: all three federated phases, budget split
    assert demo.plan_text == "pretrain:2:1:0.15,generator:2:1:0.15,finetune:4:3:0.7"
    path.write_text('[study]\nname = "x"\n[[phase]]\nname = "finetune"\nbudget_share = 1.5\n')
    with pytest.raises(StudyConfigError, match=r"s.toml: phase.budget_share"):
        load_study_config(path)
    assert demo.public_data.pretrain_epochs > 0 and all(p.name.endswith(".toml") for p in demo.public_data.sites)


def test_a_dp_pretrain_phase_needs_public_pretraining_first(tmp_path):
    """Under DP a site aligns to the CMR embedding; untrained, that embedding is nearly constant (pairwise cosine
    0.998 in the demo before this rule) and retrieval sat exactly at chance."""
    from server.study_config import StudyConfigError, load_study_config

    path = tmp_path / "s.toml"
    path.write_text('[study]\nname = "x"\ndp = true\n[[phase]]\nname = "pretrain"\n')
    with pytest.raises(StudyConfigError, match=r"s.toml: public_data.pretrain_epochs"):
        load_study_config(path)
    path.write_text('[study]\nname = "x"\ndp = true\n[public_data]\nsites = ["p.toml"]\npretrain_epochs = 2\n'
                    '[[phase]]\nname = "pretrain"\n')
    assert load_study_config(path).public_data.sites == ((tmp_path / "p.toml").resolve(),)
    path.write_text('[study]\nname = "x"\n[public_data]\nsites = []\n[[phase]]\nname = "finetune"\n')
    with pytest.raises(StudyConfigError, match=r"public_data.sites"):
        load_study_config(path)
    path.write_text('[study]\nname = "x"\ndp = false\n[[phase]]\nname = "finetune"\n[[phase]]\nname = "pretrain"\n')
    with pytest.raises(StudyConfigError, match=r"s.toml: phase: expected phases in the order pretrain -> generator"):
        load_study_config(path)


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "fedadam", "fedyogi"])
def test_every_strategy_aggregates_part_weighted_updates_and_records_the_round(run_db_url, name):
    import dataclasses
    from types import SimpleNamespace

    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters

    from rundb.schema import Round, SiteMetric
    from rundb.writer import RunDatabase
    from server.site_roster import SiteRoster
    from server.strategy import make_strategy
    from server.study_config import PhasePlan, load_study_config

    db = RunDatabase(run_db_url)  # the lab's writer on each backend
    # a toy model of norm ~1: allow updates of a few times that (real models are far larger than their updates)
    study = load_study_config("studies/demo.toml")
    study = dataclasses.replace(study, max_update_ratio=10.0, secagg=dataclasses.replace(study.secagg, enabled=False))
    study_id = db.start_study("t", "tiny", {}, total_rounds=1)
    previous = {"ecg_encoder.w": np.zeros(4, np.float32), "generator.w": np.ones(2, np.float32)}
    strategy = make_strategy(PhasePlan(name="pretrain", strategy=name, proximal_mu=0.1, server_lr=0.1), study,
                             SiteRoster(), previous)
    updates = [({"ecg_encoder.w": np.full(4, 1.0), "generator.w": np.ones(2)}, {"ecg_encoder": 100}, "hospital-a"),
               ({"ecg_encoder.w": np.full(4, 3.0), "generator.w": np.ones(2)}, {"ecg_encoder": 300}, "hospital-c")]
    results = [(SimpleNamespace(node_id=i), FitRes(Status(Code.OK, ""), ndarrays_to_parameters(encode_update(s, n, 1000)), 1,
                                                   {"site": site, "examples": sum(n.values()), "epsilon": 1.0}))
               for i, (s, n, site) in enumerate(updates)]
    strategy.configure_fit(1, None, SimpleNamespace(num_available=lambda: 0, sample=lambda **_: []))
    strategy.aggregate_fit(1, results, [])
    new = strategy.global_state
    assert np.array_equal(new["generator.w"], previous["generator.w"])  # no site trained the generator
    moved = new["ecg_encoder.w"]
    if name in ("fedavg", "fedprox"):
        assert np.allclose(moved, 2.5)  # (100 x 1 + 300 x 3) / 400
    else:
        assert (moved > 0).all() and (moved < 2.5).all()  # a server-optimizer step towards the average
    record = strategy.take_round()
    assert record.participants.part_weights["ecg_encoder"] == pytest.approx(0.2)
    db.record_round(study_id, record)  # the study runner writes the round once
    with db.session() as s:
        assert s.query(SiteMetric).count() == 2
        assert s.query(Round).one().participants["trained"] == ["hospital-a", "hospital-c"]


def test_cmr_side_parts_are_weighted_by_pairs_only(tiny_cohort_template):
    from sitedata.site_config import load_site_config
    from sitedata.site_data import prepare_site
    from client.site_round import part_examples, phase_dataset

    site = prepare_site(load_site_config(tiny_cohort_template / "site_configs" / "hospital-a.toml"))
    data = phase_dataset(site, "pretrain")
    pairs = sum(1 for s in site.subjects if s.split == "train" and s.cmr_key is not None)
    weights = part_examples(data, {"ecg_encoder", "cmr_encoder", "ecg_projection"})
    assert weights == {"ecg_encoder": len(data), "cmr_encoder": pairs, "ecg_projection": pairs}


def test_the_lab_scores_the_global_model_on_its_own_panel_and_the_summary_shows_it(tiny_cohort_template, tmp_path):
    from rich.console import Console

    from cardiacfl.summary import print_summary
    from protocol.round_record import RoundRecord
    from rundb.writer import RunDatabase
    from server.reference_panel import LabPanel
    from shared_models.cardiacnets import build_model

    panel = LabPanel(str(tiny_cohort_template / "site_configs" / "hospital-a.toml"))
    model = build_model("tiny")
    finetune = panel.evaluate(model, "finetune")
    assert finetune["lab/mean_auroc"] == 0.5 and all(k.startswith("lab/") for k in finetune)  # untrained: no ranking
    pretrain = panel.evaluate(model, "pretrain")
    assert {"lab/retrieval_top1", "lab/retrieval_chance", "lab/cmr_pairwise_cosine"} <= set(pretrain)
    for key in ("retrieval_top1", "retrieval_top5", "retrieval_median_rank"):  # every held-out figure: an interval
        assert pretrain[f"lab/{key}_low"] <= pretrain[f"lab/{key}"] <= pretrain[f"lab/{key}_high"]
    assert finetune["lab/mean_auroc_low"] <= 0.5 <= finetune["lab/mean_auroc_high"]

    db = RunDatabase(str(tmp_path / "run.db"))
    study_id = db.start_study("s", "tiny", {"phases": [{"name": "finetune"}]}, total_rounds=1)
    db.record_round(study_id, RoundRecord("finetune", 1, started=0.0, seconds=1.0, global_metrics={**finetune, "loss": 1.0}))
    console = Console(record=True, width=200)
    print_summary(tmp_path / "run.db", console)
    text = console.export_text()
    assert "reference panel" in text and "mean AUROC" in text and "0.500" in text and "(chance)" in text
    assert "95 % interval" in text and f"{finetune['lab/mean_auroc_low']:.3f}-" in text


def test_the_summary_shows_every_phase_and_site_whole_at_80_columns(tmp_path):
    import io

    from rich.console import Console

    from cardiacfl.summary import print_summary
    from protocol.participants import Participants
    from protocol.round_record import RoundRecord, SiteReport
    from rundb.writer import RunDatabase

    db = RunDatabase(str(tmp_path / "run.db"))
    study_id = db.start_study("demo", "cpu", {}, total_rounds=2)
    sites = ["hospital-north-wales", "biobank-new-scanner", "hospital-c"]
    lab = {"lab/retrieval_top1": 0.04, "lab/retrieval_chance": 0.008, "lab/ssim": 0.6, "lab/baseline_ssim": 0.7,
           "lab/mean_auroc": 0.76, "lab/mean_r2": 0.3}
    for phase in ("public-pretrain", "public-generator", "public-finetune"):
        db.record_round(study_id, RoundRecord(phase, 0, started=0.0, seconds=30.0, global_metrics=lab,
                                              participants=Participants(public={"examples": 600})))
    reports = [SiteReport(s, kind, 40, {"mean_auroc": 0.7, "mean_r2": 0.2, "epsilon": 4.5, "target_epsilon": 8.0,
                                        "noise_multiplier": 1.1, "declined": 0}) for s in sites for kind in ("fit", "evaluate")]
    db.record_round(study_id, RoundRecord("finetune", 1, started=0.0, seconds=12.0, site_reports=reports,
                                          global_metrics={"loss": 0.5, "mean_auroc": 0.71, "mean_r2": 0.25, **lab},
                                          participants=Participants(trained=sites)))
    terminal = Console(width=80, record=True, force_terminal=True)
    piped_file = io.StringIO()
    for console in (terminal, Console(file=piped_file)):  # a pipe: rich's default width, no terminal
        print_summary(tmp_path / "run.db", console)
    for text in (terminal.export_text(), piped_file.getvalue()):
        assert max(len(line) for line in text.splitlines()) <= 80
        words = set(text.replace("│", " ").replace("┃", " ").split())
        for name in ("public-pretrain", "public-generator", "public-finetune", "finetune", *sites):
            assert name in words, (name, text)
        assert "mean AUROC" in text and "ε spent" in text and "mean_auroc" not in text
