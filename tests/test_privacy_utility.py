"""The privacy-utility benchmark: each arm's sites get their own ledgers and budget, the mean-AUROC CI is a real
bootstrap, and a toy run writes utility.json in the documented schema."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import privacy_utility as pu  # noqa: E402
from sitedata.site_config import load_site_config  # noqa: E402


def test_an_arm_site_has_its_own_ledger_and_budget_but_the_same_data_and_cache(tiny_cohort_template, tmp_path):
    original = load_site_config(tiny_cohort_template / "site_configs" / "hospital-a.toml")
    dp = load_site_config(pu.arm_site_config(original.path, tmp_path / "eps3", 3.0))
    assert dp.privacy.target_epsilon == 3.0 and dp.privacy.required
    assert dp.ledger_path.is_relative_to(tmp_path) and dp.ledger_copy_path.is_relative_to(tmp_path)
    assert dp.cache_dir == original.cache_dir and dp.manifest == original.manifest
    assert (dp.data_root / "manifest.csv").resolve() == original.manifest
    assert not (dp.data_root / ".cardiacfl-state").exists()  # a fresh ledger, not the original's
    plain = load_site_config(pu.arm_site_config(original.path, tmp_path / "nodp", None))
    assert not plain.privacy.required and plain.privacy.target_epsilon == original.privacy.target_epsilon


class _Scores:
    """A stand-in model whose disease logits are given."""

    def __init__(self, logits):
        self.logits = torch.as_tensor(logits, dtype=torch.float32)

    def eval(self):
        return self

    def heads(self, batch):
        return None, self.logits[batch["index"]]


def _loader(labels):
    labels = torch.as_tensor(labels, dtype=torch.float32)
    return [{"index": torch.arange(len(labels)), "diseases": labels, "disease_mask": torch.ones_like(labels)}]


def test_mean_auroc_ci_brackets_the_estimate_and_separates_signal_from_noise():
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 5)) < 0.3).astype(float)
    perfect, ci = pu.mean_auroc_with_ci(_Scores(labels * 4 - 2), _loader(labels), n=50)
    assert perfect == 1.0 and ci == [1.0, 1.0]
    noise, (low, high) = pu.mean_auroc_with_ci(_Scores(rng.normal(size=(200, 5))), _loader(labels), n=200)
    assert low < noise < high and low < 0.5 < high and high - low < 0.2


@pytest.mark.slow
def test_a_toy_run_writes_utility_json_in_the_documented_schema(tmp_path):
    from synthetic.cohort import SiteSpec, write_layout
    from synthetic.paper_layout import paper_layout

    write_layout(tmp_path / "paper", [SiteSpec(s.profile, 16) for s in paper_layout(1.0)], seed=5, workers=2)
    toy = pu.Budget("tiny", finetune_epochs=1, rounds=1, public_pretrain_epochs=1, public_generator_epochs=1,
                    public_subjects=12, epsilons=(8.0,), bootstrap=5)
    pu.run(tmp_path / "paper", tmp_path / "out", toy)
    rows = json.loads((tmp_path / "out" / "utility.json").read_text())
    assert all(tuple(row) == pu.ROW_KEYS for row in rows)
    arms = {(r["setting"], r["epsilon"], r["encoder"]) for r in rows}
    settings = ["centralized", "federated", "federated-dp", "local:hospital-1", "local:hospital-2", "local:hospital-3"]
    assert {(s, e) for s, e, _ in arms} == {(s, 8.0 if s == "federated-dp" else None) for s in settings}
    assert {e for *_, e in arms} == set(pu.ENCODERS)
    assert {r["eval"] for r in rows} == {"pooled", "hospital-1", "hospital-2", "hospital-3"}
    for row in rows:
        assert len(row["auroc_ci"]) == 2 and row["seconds"] >= 0
        if row["encoder"] == "scratch":  # no CMR side, no generator
            assert row["retrieval_chance"] is None and row["ssim"] is None
        elif row["eval"] == "pooled":  # a toy hospital's test split may hold fewer than 2 pairs
            assert row["retrieval_chance"] > 0
            trained_generator = row["ssim_mean_clip"] is not None and row["ssim_mean_clip"] > 0
            assert trained_generator == (row["encoder"] == "cmr-aligned")  # only it trained a generator
    effects = json.loads((tmp_path / "out" / "alignment.json").read_text())
    assert {(e["setting"], e["epsilon"]) for e in effects} == {(s, e) for s, e, _ in arms}  # every arm compared
    for effect in effects:
        assert effect["difference"] == pytest.approx(effect["auroc_cmr_aligned"] - effect["auroc_masked_ecg"])
    assert (tmp_path / "out" / "utility.png").stat().st_size > 10_000
