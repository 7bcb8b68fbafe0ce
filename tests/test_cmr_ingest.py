"""DICOM and NIfTI ingest on pydicom's and nibabel's own test files and on synthetic series."""

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from sitedata.cmr_ingest import CmrError, read_cmr
from sitedata.site_config import CmrSettings
from synthetic.cmr_phantom import Scanner, render_cine
from synthetic.latent_state import Prevalence, sample_state
from synthetic.writers import write_dicom_cine, write_nifti

SETTINGS = CmrSettings(image_size=32, frames=4, pixel_spacing_mm=0.625, min_source_frames=4)


def _series_from(test_file: str, folder: Path, frames: int = 4, description: str = "cine sax", uid: str = "1.2.3.4") -> Path:
    """A short 'cine' made of copies of one pydicom test image (compressed data kept as it is), each its own
    instance with a per-frame RescaleIntercept so that the frames change over time as a beating heart's do;
    written in shuffled order so the reader has to sort by TriggerTime."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in (2, 0, 3, 1)[:frames]:
        ds = pydicom.dcmread(get_testdata_file(test_file))
        ds.SeriesInstanceUID = uid
        ds.SeriesDescription = description
        ds.TriggerTime = 40.0 * f
        ds.InstanceNumber = f + 1
        ds.SOPInstanceUID = f"{uid}.{f}"
        ds.RescaleSlope, ds.RescaleIntercept = 1, 10 * f
        ds.save_as(folder / f"{uid}-img{(7 * f) % 5}.dcm")
    return folder


@pytest.mark.parametrize("test_file", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_bigendian.dcm"])
def test_compressed_transfer_syntaxes_decode_like_uncompressed(test_file, tmp_path):
    reference = read_cmr(_series_from("MR_small.dcm", tmp_path / "ref"), SETTINGS)
    clip = read_cmr(_series_from(test_file, tmp_path / "cmp"), SETTINGS)
    assert clip.frames.shape == (4, 32, 32)
    assert np.array_equal(clip.frames, reference.frames)
    assert clip.meta["transfer_syntax"] == str(pydicom.dcmread(get_testdata_file(test_file)).file_meta.TransferSyntaxUID)


def test_frames_ordered_by_trigger_time(tmp_path):
    folder = tmp_path / "cine"
    base = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    for f in range(4):
        ds = base.copy()
        pixels = base.pixel_array.copy()
        pixels[:8, :8] = 200 * (f + 1)  # frame number burned into a corner
        ds.PixelData = pixels.tobytes()
        ds.TriggerTime, ds.InstanceNumber, ds.SeriesInstanceUID, ds.SOPInstanceUID = 50.0 * f, 10 - f, "9.9", f"9.9.{f}"
        folder.mkdir(exist_ok=True)
        ds.save_as(folder / f"z{3 - f}.dcm")
    clip = read_cmr(folder, CmrSettings(image_size=64, frames=4, pixel_spacing_mm=0.3125, min_source_frames=4))
    corner = clip.frames[:, 2, 2]
    assert np.all(np.diff(corner) > 0)


def test_dicom_without_pixel_data(tmp_path):
    folder = _series_from("MR_small.dcm", tmp_path / "cine")
    for file in folder.iterdir():
        ds = pydicom.dcmread(file)
        del ds.PixelData
        ds.save_as(file)
    with pytest.raises(CmrError, match="has no pixel data"):
        read_cmr(folder, SETTINGS)


def test_mixed_series_without_a_clear_cine_is_refused(tmp_path):
    _series_from("MR_small.dcm", tmp_path / "study", description="cine sax", uid="1.1")
    _series_from("MR_small_RLE.dcm", tmp_path / "study", description="cine sax", uid="1.2")
    with pytest.raises(CmrError, match="mixed series"):
        read_cmr(tmp_path / "study", SETTINGS)
    # naming the series in the config resolves it
    _series_from("MR_small.dcm", tmp_path / "study2", description="cine sax", uid="1.1")
    _series_from("MR_small_RLE.dcm", tmp_path / "study2", description="cine_other", uid="1.2")
    clip = read_cmr(tmp_path / "study2", CmrSettings(image_size=32, frames=4, pixel_spacing_mm=0.625, min_source_frames=4,
                                                     series_description="^cine_other$"))
    assert clip.meta["series_uid"] == "1.2"


def test_frames_of_different_size_in_one_series_are_refused(tmp_path):
    folder = _series_from("MR_small.dcm", tmp_path / "cine")
    file = sorted(folder.iterdir())[0]
    ds = pydicom.dcmread(file)
    ds.Rows, ds.Columns = 32, 128
    ds.save_as(file)
    with pytest.raises(CmrError, match="different sizes"):
        read_cmr(folder, SETTINGS)


def test_nibabel_example_4d_volume_with_two_time_points_is_not_interpolated_into_a_cine():
    """Before: its 2 time points (an fMRI run, 2 s apart) were interpolated to 16 frames and accepted."""
    import nibabel

    path = Path(nibabel.__file__).parent / "tests" / "data" / "example4d.nii.gz"
    with pytest.raises(CmrError, match="only 2 time points; a cine needs at least 10"):
        read_cmr(path, CmrSettings())
    # With the minimum lowered to 2 it is read, and its frame interval (the header says 2000 "sec") is reported.
    clip = read_cmr(path, CmrSettings(min_source_frames=2))
    assert clip.frames.shape == (16, 64, 64) and clip.meta["source_dims"] == [128, 96, 24, 2]
    assert any(w.startswith("low temporal resolution") for w in clip.meta["warnings"])


def test_nifti_with_wrong_dimensions(tmp_path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((8, 8), dtype=np.int16), np.eye(4)), str(tmp_path / "flat.nii"))
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 2, 3, 2), dtype=np.int16), np.eye(4)), str(tmp_path / "five.nii.gz"))
    for name in ("flat.nii", "five.nii.gz"):
        with pytest.raises(CmrError, match=f"{name}: wrong dimensions"):
            read_cmr(tmp_path / name, CmrSettings())


def test_corrupt_nifti(tmp_path):
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(CmrError, match="junk.nii.gz: not a readable NIfTI"):
        read_cmr(tmp_path / "junk.nii.gz", CmrSettings())


def test_dicom_series_and_its_nifti_give_the_same_clip(tmp_path):
    """Orientation, spacing, slice choice and rescaling agree between the two readers."""
    rng = np.random.default_rng(3)
    state = sample_state(rng, Prevalence(0.2, 0.2, 0.2, 0.2), 60)
    cine = render_cine(state, Scanner(matrix=96, spacing_mm=2.5, frames=10), rng)
    write_dicom_cine(tmp_path / "dicom", cine, 2.5, 10.0, 70.0, "S1", uid_seed="t", rescale_slope=2.0)
    write_nifti(tmp_path / "cine.nii.gz", cine, 2.5, 10.0, scale=2.0)
    settings = CmrSettings(image_size=64, frames=8, pixel_spacing_mm=2.0)
    from_dicom = read_cmr(tmp_path / "dicom", settings)
    from_nifti = read_cmr(tmp_path / "cine.nii.gz", settings)
    assert from_dicom.meta["series_description"] == "cine_sax bSSFP"  # the localizer was not picked
    assert from_dicom.meta["n_slices"] == 3
    assert np.allclose(from_dicom.frames, from_nifti.frames, atol=1e-5)
    assert from_dicom.meta["slice_location"] == pytest.approx(from_nifti.meta["slice_location"], abs=0.01)


def test_rescale_slope_is_applied(tmp_path):
    ref = read_cmr(_series_from("MR_small.dcm", tmp_path / "a"), SETTINGS)
    folder = _series_from("MR_small.dcm", tmp_path / "b")
    for file in folder.iterdir():
        ds = pydicom.dcmread(file)
        ds.RescaleSlope, ds.RescaleIntercept = 3, 100 + 3 * ds.RescaleIntercept  # 3 x the same cine + 100
        ds.save_as(file)
    scaled = read_cmr(folder, SETTINGS)
    low, high = ref.meta["intensity_window"]
    assert scaled.meta["intensity_window"] == pytest.approx([3 * low + 100, 3 * high + 100])
    assert np.allclose(scaled.frames, ref.frames, atol=1e-5)  # per-study normalisation removes the scale


def test_spacing_resampling_and_crop(tmp_path):
    clip = read_cmr(_series_from("MR_small.dcm", tmp_path / "c"), CmrSettings(image_size=20, frames=6, pixel_spacing_mm=1.25,
                                                                                min_source_frames=4))
    assert clip.frames.shape == (6, 20, 20)
    assert clip.meta["source_shape"] == [4, 64, 64] and clip.meta["source_spacing_mm"] == [0.3125, 0.3125]
