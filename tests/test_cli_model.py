"""`cardiacfl train-central` on a tiny cohort, then `cardiacfl predict` on the real PhysioNet record."""

import json

from typer.testing import CliRunner

from cardiacfl.cli import app


def test_train_central_then_predict_on_the_real_record(tiny_cohort_template, physionet, tmp_path):
    runner = CliRunner()
    out = tmp_path / "central"
    result = runner.invoke(app, ["train-central", "--data", str(tiny_cohort_template), "--out", str(out),
                                 "--preset", "tiny", "--epochs", "1", "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "metrics.json").read_text())
    assert list(summary["phases"]) == ["pretrain", "generator", "finetune"]
    assert "mean_auroc" in summary["phases"]["finetune"]["test"]
    assert "generator_loss" in summary["phases"]["generator"]["test"]
    for name in ("pretrain.pt", "generator.pt", "finetune.pt", "loss_finetune.png"):
        assert (out / name).is_file(), name

    clips = tmp_path / "clips"
    result = runner.invoke(app, ["predict", "--checkpoint", str(out / "finetune.pt"),
                                 "--ecg", str(physionet / "s0010_re"), "--out", str(clips), "--json"])
    assert result.exit_code == 0, result.output
    prediction = json.loads(result.stdout)
    assert prediction["windows"] == 3 and len(prediction["leads_used"]) == 12
    assert prediction["demographics"] == {"age": 81.0, "sex_male": 0.0}
    assert set(prediction["indicators"]) >= {"LVEF", "LVEDV"}
    assert all(0 <= p <= 1 for p in prediction["disease_probability"].values())
    gif = clips / "s0010_re_cmr.gif"
    assert gif.is_file() and len(list((clips / "s0010_re_cmr_frames").glob("*.png"))) == 16

    human = runner.invoke(app, ["predict", "--checkpoint", str(out / "finetune.pt"), "--ecg", str(physionet / "s0010_re")])
    assert human.exit_code == 0 and "LVEF" in human.output


def test_predict_refuses_a_two_lead_record_with_a_reason(tiny_cohort_template, physionet, tmp_path):
    from shared_models.cardiacnets import build_model
    from shared_models.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "m.pt", build_model("tiny"), phase="finetune", step=0)
    result = CliRunner().invoke(app, ["predict", "--checkpoint", str(tmp_path / "m.pt"), "--ecg", str(physionet / "100")])
    assert result.exit_code == 2  # a record it cannot score is bad input
    assert "missing" in result.output and "I" in result.output
    assert CliRunner().invoke(app, ["predict", "--checkpoint", str(tmp_path / "nope.pt"), "--ecg", "x"]).exit_code == 2


def test_predict_takes_a_hea_path_physionet_demographics_and_reduced_leads(physionet, tmp_path):
    """Before: outputs named RECORD.hea_cmr.gif, and `<age>: 25 <sex>: M` comments were not read."""
    import numpy as np

    from cardiacfl.predict import header_demographics
    from shared_models.cardiacnets import build_model
    from shared_models.checkpoint import save_checkpoint
    from synthetic.writers import write_wfdb

    save_checkpoint(tmp_path / "m.pt", build_model("tiny"), phase="finetune", step=0)
    eight = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
    signal = np.random.default_rng(0).normal(0, 0.3, (8, 5000))
    write_wfdb(tmp_path / "rec" / "r8", signal, 500, eight, "16", ["<age>: 25 <sex>: M"])
    assert header_demographics(tmp_path / "rec" / "r8.hea") == (25.0, 1.0)
    runner = CliRunner()
    refused = runner.invoke(app, ["predict", "--checkpoint", str(tmp_path / "m.pt"), "--ecg", str(tmp_path / "rec" / "r8.hea")])
    assert refused.exit_code == 2 and "III" in refused.output  # bad input: names what is missing
    result = runner.invoke(app, ["predict", "--checkpoint", str(tmp_path / "m.pt"), "--ecg", str(tmp_path / "rec" / "r8.hea"),
                                 "--allow-reduced-leads", "--out", str(tmp_path / "clips"), "--json"])
    assert result.exit_code == 0, result.output
    prediction = json.loads(result.stdout)
    assert prediction["leads_used"] == eight and prediction["demographics"] == {"age": 25.0, "sex_male": 1.0}
    assert (tmp_path / "clips" / "r8_cmr.gif").is_file()
