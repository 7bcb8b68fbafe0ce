"""The heart found from the cine's own motion: the model's window is cut around the LV wherever the scanner put it."""

import numpy as np
import pytest

from sitedata.cmr_ingest import read_cmr
from sitedata.heart_localisation import locate_heart
from sitedata.site_config import CmrSettings
from synthetic.cmr_phantom import Scanner, render_cine
from synthetic.latent_state import Prevalence, sample_state
from synthetic.writers import write_dicom_cine, write_nifti

SCANNER = Scanner()  # 128 x 128 pixels of 2.1 mm: a 269 mm field of view, as a cine's
SETTINGS = CmrSettings()  # the model's 64 x 64 window of 2 mm, "auto" ROI
DISPLACEMENTS = [(18.0, -15.0), (-20.0, 12.0), (6.0, 20.0), (-13.0, -19.0)]


def _cine_with_beacon(seed: int, centre_mm):
    """The phantom, and the same phantom with a small static dark mark at the LV centre: where the mark lands
    in the model's clip is where the LV centre went (static, so it does not move the localisation; dark, because
    the bright blood pool already fills the clip's intensity window and a bright mark would be clipped)."""
    state = sample_state(np.random.default_rng(seed), Prevalence(0.3, 0.2, 0.0, 0.1), 60)
    cine = render_cine(state, SCANNER, np.random.default_rng(seed), centre_mm=centre_mm)
    exact = np.asarray(centre_mm) / SCANNER.spacing_mm + SCANNER.matrix / 2 - 0.5
    row, col = exact.round().astype(int)
    marked = cine.copy()
    marked[:, :, row - 1:row + 2, col - 1:col + 2] = 0.0
    return cine, marked, (exact.round() - exact) * SCANNER.spacing_mm  # the mark's offset from the LV centre, mm


@pytest.mark.parametrize("kind", ["dicom", "nifti"])
@pytest.mark.parametrize("index", range(len(DISPLACEMENTS)))
def test_a_displaced_heart_is_cropped_around_its_lv(tmp_path, kind, index):
    centre_mm = DISPLACEMENTS[index]
    clips = []
    *cines, mark_offset_mm = _cine_with_beacon(index, centre_mm)
    for name, cine in zip(("plain", "marked"), cines):
        if kind == "dicom":
            write_dicom_cine(tmp_path / name, cine, SCANNER.spacing_mm, SCANNER.slice_gap_mm, 70.0, f"s{index}", name)
            clips.append(read_cmr(tmp_path / name, SETTINGS))
        else:
            write_nifti(tmp_path / f"{name}.nii.gz", cine, SCANNER.spacing_mm, SCANNER.slice_gap_mm)
            clips.append(read_cmr(tmp_path / f"{name}.nii.gz", SETTINGS))
    plain, marked = clips
    assert plain.meta["crop_offsets"] == marked.meta["crop_offsets"]  # the mark did not move the window
    diff = (plain.frames - marked.frames).mean(axis=0)  # take where the mark is, not its depth
    lv = np.argwhere(diff > 0.5 * diff.max()).mean(axis=0) - mark_offset_mm / SETTINGS.pixel_spacing_mm
    middle = (SETTINGS.image_size - 1) / 2
    miss_mm = np.hypot(lv[0] - middle, lv[1] - middle) * SETTINGS.pixel_spacing_mm
    assert miss_mm <= 2.0, (centre_mm, lv, plain.meta["heart_offset_mm"])
    assert np.hypot(*plain.meta["heart_offset_mm"]) == pytest.approx(np.hypot(*centre_mm), abs=3.0)


def test_a_cine_that_barely_moves_is_cropped_at_the_centre_and_says_why(tmp_path):
    cine, *_ = _cine_with_beacon(0, (15.0, 15.0))
    still = np.repeat(cine[:, :1], cine.shape[1], axis=1)
    still[:, ::2] *= 1.0001  # a flicker, not a heartbeat
    write_nifti(tmp_path / "still.nii.gz", still, SCANNER.spacing_mm, SCANNER.slice_gap_mm, scale=0.01)
    clip = read_cmr(tmp_path / "still.nii.gz", SETTINGS)
    assert clip.meta["heart_offset_mm"] is None
    assert any("heart not localised" in w and "motion too weak" in w for w in clip.meta["warnings"])


def test_the_image_centre_when_the_site_asks_for_it(tmp_path):
    cine, *_ = _cine_with_beacon(1, (18.0, -15.0))
    write_nifti(tmp_path / "c.nii.gz", cine, SCANNER.spacing_mm, SCANNER.slice_gap_mm)
    centred = read_cmr(tmp_path / "c.nii.gz", CmrSettings(roi_center=None))
    found = read_cmr(tmp_path / "c.nii.gz", SETTINGS)
    assert centred.meta["heart_offset_mm"] is None and centred.meta["crop_offsets"] != found.meta["crop_offsets"]


def test_a_crescent_alone_is_not_taken_for_an_lv():
    """Only an RV-like crescent moves: no round pool, no localisation (a wrong crop would be worse than none)."""
    t, n = 16, 96
    yy, xx = np.mgrid[:n, :n].astype(float)
    frames = np.full((t, n, n), 100.0)
    for f in range(t):
        squeeze = 1 - 0.3 * (1 - np.cos(2 * np.pi * f / t)) / 2
        outer = np.hypot((yy - 48) / (30 * squeeze), (xx - 48) / 30) < 1
        inner = np.hypot((yy - 48) / 24, (xx - 62) / 24) < 1
        frames[f][outer & ~inner] = 1000.0
    assert locate_heart(frames, 2.0).centre is None


def test_the_data_report_gives_the_offset_found_per_subject(tiny_cohort):
    from sitedata.site_config import load_site_config
    from sitedata.site_data import prepare_site

    site = prepare_site(load_site_config(tiny_cohort / "site_configs" / "hospital-a.toml"))
    paired = [s.subject_id for s in site.subjects if s.cmr_key is not None]
    offsets = site.report.heart_offsets_mm
    assert offsets and set(offsets) <= set(paired)
    not_found = {p.subject_id for p in site.report.problems if "heart not localised" in p.reason}
    assert set(paired) == set(offsets) | not_found  # each study: an offset, or a warning saying why not
    assert all(np.hypot(*offset) < 40 for offset in offsets.values())  # the phantom puts the LV a few mm off
    assert "heart localised in" in site.report.heart_line() and '"heart_offsets_mm"' in site.report.to_json()
