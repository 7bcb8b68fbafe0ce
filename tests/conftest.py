"""Shared fixtures: the real PhysioNet records and a tiny synthetic cohort."""

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PHYSIONET = Path(os.environ.get("CARDIACFL_PHYSIONET_DIR", REPO.parent / "shared" / "data" / "physionet"))


@pytest.fixture(scope="session")
def physionet() -> Path:
    if not (PHYSIONET / "s0010_re.hea").is_file():
        pytest.fail(f"real PhysioNet test records not found in {PHYSIONET} (set CARDIACFL_PHYSIONET_DIR)")
    return PHYSIONET


@pytest.fixture(scope="session")
def tiny_cohort_template(tmp_path_factory) -> Path:
    from synthetic.cohort import generate_cohort

    out = tmp_path_factory.mktemp("cohort")
    generate_cohort(out, n_sites=3, subjects=8, seed=1, workers=1)
    return out


@pytest.fixture
def tiny_cohort(tiny_cohort_template, tmp_path) -> Path:
    """A private copy tests may corrupt."""
    target = tmp_path / "cohort"
    shutil.copytree(tiny_cohort_template, target)
    return target


@pytest.fixture
def tiny_dp_study():
    """study.toml text for the tiny cohort's 3 sites (copied to `cohort/` beside it): DP fine-tuning, no SecAgg+."""
    def text(name: str, rounds: int) -> str:
        sites = ", ".join(f'"cohort/site_configs/hospital-{s}.toml"' for s in "abc")
        return (f'[study]\nname = "{name}"\npreset = "tiny"\nsites = [{sites}]\ndp = true\n\n'
                f'[secagg]\nenabled = false\n\n[[phase]]\nname = "finetune"\nrounds = {rounds}\nlocal_epochs = 1\n')
    return text
