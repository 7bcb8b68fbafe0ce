"""Site config validation: errors name the file, the key and what was expected."""

from pathlib import Path

import pytest

from sitedata.site_config import SiteConfigError, load_site_config
from synthetic.cohort import BASE_PROFILES, render_site_config

REPO = Path(__file__).resolve().parents[1]


def test_shipped_demo_configs_load_and_match_what_synth_writes():
    for profile in BASE_PROFILES:
        path = REPO / "site_configs" / f"{profile.site_id}.toml"
        config = load_site_config(path)
        assert config.site_id == profile.site_id
        assert config.data_root == (REPO / "data" / "demo-cohort" / profile.site_id).resolve()
        assert ("cmr" in config.modalities) == (profile.cmr_format is not None)
        # the shipped file is exactly what `cardiacfl synth` writes, apart from where the data lives
        assert path.read_text() == render_site_config(profile, f"../data/demo-cohort/{profile.site_id}")


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text('[site]\nid = "h1"\ndata_root = "."\n' + text)
    return path


@pytest.mark.parametrize("text, key, expected", [
    ("[ecg]\nsampling_rate_hz = \"fast\"\n", "ecg.sampling_rate_hz", "an integer"),
    ("[ecg]\nwindow_s = -1\n", "ecg.window_s", "a positive number"),
    ("[privacy]\ntarget_delta = 2.0\n", "privacy.target_delta", "between 0 and 1"),
    ("[training]\ndevice = \"tpu\"\n", "training.device", "one of auto, cpu, cuda"),
    ("[cmr]\nroi_center = [0.5]\n", "cmr.roi_center", "two fractions"),
    ("[ecg]\nallow_reduced_leads = 1\n", "ecg.allow_reduced_leads", "true or false"),
])
def test_bad_values_name_file_key_and_expectation(tmp_path, text, key, expected):
    path = _write(tmp_path, text)
    with pytest.raises(SiteConfigError) as err:
        load_site_config(path)
    message = str(err.value)
    assert str(path) in message and f"'{key}'" in message and expected in message


def test_unknown_key_is_an_error_not_a_silent_default(tmp_path):
    with pytest.raises(SiteConfigError, match=r"unknown key 'ecg.sampling_rate'"):
        load_site_config(_write(tmp_path, "[ecg]\nsampling_rate = 500\n"))


def test_missing_site_table_and_file(tmp_path):
    path = tmp_path / "empty.toml"
    path.write_text("[ecg]\n")
    with pytest.raises(SiteConfigError, match=r"empty.toml: missing table '\[site\]'"):
        load_site_config(path)
    with pytest.raises(SiteConfigError, match="not found"):
        load_site_config(tmp_path / "nope.toml")


def test_paths_resolve_relative_to_the_config_file(tmp_path):
    config = load_site_config(_write(tmp_path, "[cmr]\nroi_center = [0.4, 0.6]\n"))
    assert config.data_root == tmp_path.resolve()
    assert config.manifest == tmp_path.resolve() / "manifest.csv"
    assert config.cmr.roi_center == (0.4, 0.6)
