"""The paper-shaped federation: a paired biobank, an ECG-only archive and three small hospitals that differ."""

import csv

import pydicom
import pytest

from sitedata.site_config import load_site_config
from sitedata.site_data import prepare_site
from synthetic.cohort import SiteSpec, write_layout
from synthetic.paper_layout import HOSPITAL_SIZES, paper_layout


def test_sizes_follow_the_paper_and_scale():
    full = {spec.profile.site_id: spec.subjects for spec in paper_layout(1.0)}
    assert [full[f"hospital-{i}"] for i in (1, 2, 3)] == list(HOSPITAL_SIZES)
    assert full["ecg-archive"] > full["biobank"] > max(HOSPITAL_SIZES)
    half = {spec.profile.site_id: spec.subjects for spec in paper_layout(0.5)}
    assert half["hospital-2"] == 232 and half["biobank"] == full["biobank"] // 2
    assert min(spec.subjects for spec in paper_layout(0.001)) >= 40  # every split keeps people
    with pytest.raises(ValueError, match="scale"):
        paper_layout(0)


@pytest.fixture(scope="module")
def paper_cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")
    layout = [SiteSpec(spec.profile, 6) for spec in paper_layout(1.0)]  # the shapes, not the sizes
    return out, write_layout(out, layout, seed=3, workers=1)


def _rows(config):
    with config.manifest.open() as handle:
        return list(csv.DictReader(handle))


def test_each_site_has_its_modalities_formats_and_config(paper_cohort):
    _, configs = paper_cohort
    configs = {path.stem: load_site_config(path) for path in configs}
    assert sorted(configs) == ["biobank", "ecg-archive", "hospital-1", "hospital-2", "hospital-3"]
    assert configs["ecg-archive"].modalities == ("ecg",)
    assert all(r["cmr_path"] == "" and r["LVEF"] == "" for r in _rows(configs["ecg-archive"]))
    assert all(r["ecg_path"].startswith("files/p") for r in _rows(configs["ecg-archive"]))  # MIMIC-IV-ECG layout
    for site in ("biobank", "hospital-2"):
        assert all(r["cmr_path"].endswith(".nii.gz") for r in _rows(configs[site]))
    vendors = set()
    for site in ("hospital-1", "hospital-3"):
        config = configs[site]
        first = next((config.data_root / _rows(config)[0]["cmr_path"]).glob("IM_*.dcm"))
        header = pydicom.dcmread(first, stop_before_pixels=True)
        vendors.add(header.Manufacturer)
        assert header.Modality == "MR"
    assert len(vendors) == 2


def test_a_hospital_records_reduced_leads_at_a_lower_rate_and_is_still_usable(paper_cohort):
    out, _ = paper_cohort
    header = next((out / "hospital-3").rglob("*.hea")).read_text().splitlines()
    n_signals, rate = int(header[0].split()[1]), int(header[0].split()[2])
    assert (n_signals, rate) == (8, 250)
    config = load_site_config(out / "site_configs" / "hospital-3.toml")
    assert config.ecg.allow_reduced_leads
    site = prepare_site(config)
    assert site.report.usable_subjects == 6
    masks = [subject.lead_masks for subject in site.subjects]
    assert all((m.sum(axis=1) == 8).all() for m in masks)  # the 4 leads it lacks are masked, not invented
