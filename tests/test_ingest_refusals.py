"""What is not a cine is refused with what it is, and what is a cine is read: pydicom's and nibabel's own test
files, and files written here with pydicom and nibabel."""

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from sitedata.cmr_ingest import CmrError, read_cmr
from sitedata.site_config import CmrSettings
from tests.test_cmr_ingest import _series_from

SETTINGS = CmrSettings(image_size=32, frames=4, pixel_spacing_mm=0.625, min_source_frames=4)
NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"


def _folder_of(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "study"
    folder.mkdir()
    for i, name in enumerate(names):
        shutil.copy(get_testdata_file(name), folder / f"{i}-{name}")
    return folder


@pytest.mark.parametrize("name", ["rtdose.dcm", "rtdose_rle.dcm"])
def test_an_rt_dose_grid_is_not_a_cine(tmp_path, name):
    """Before: its 15 dose planes were read as a 15-frame cine."""
    with pytest.raises(CmrError, match=r"format not supported: RT Dose Storage \(modality RTDOSE\) is not an MR image"):
        read_cmr(_folder_of(tmp_path, name), SETTINGS)


def test_a_binary_segmentation_is_not_a_cine(tmp_path):
    folder = _series_from("MR_small.dcm", tmp_path / "seg")
    for file in folder.iterdir():
        ds = pydicom.dcmread(file)
        ds.Modality, ds.SOPClassUID = "SEG", "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
        ds.save_as(file)
    with pytest.raises(CmrError, match=r"Segmentation Storage \(modality SEG\) is not an MR image"):
        read_cmr(folder, SETTINGS)


def test_copies_of_one_instance_in_several_transfer_syntaxes_are_not_a_cine(tmp_path):
    """Before: read as a cine of identical frames."""
    folder = _folder_of(tmp_path, "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm")
    with pytest.raises(CmrError, match=r"files share SOPInstanceUID .* \(copies of one image, not a cine\)"):
        read_cmr(folder, SETTINGS)


def test_frames_that_never_change_are_not_a_cine(tmp_path):
    folder = _series_from("MR_small.dcm", tmp_path / "static")
    for file in folder.iterdir():
        ds = pydicom.dcmread(file)
        ds.RescaleIntercept = 0  # every frame the same image
        ds.save_as(file)
    with pytest.raises(CmrError, match="its 4 frames are identical: a static image, not a cine"):
        read_cmr(folder, SETTINGS)


@pytest.mark.parametrize("name, what", [("waveform_ecg.dcm", r"12-lead ECG Waveform Storage \(modality ECG\)"),
                                        ("test-SR.dcm", r"Comprehensive SR Storage \(modality SR\)")])
def test_non_image_dicom_says_what_it_is(tmp_path, name, what):
    """Before: "unexpected AttributeError: 'FileDataset' object has no attribute 'Rows'"."""
    with pytest.raises(CmrError, match=f"format not supported: {what} is not an MR image"):
        read_cmr(_folder_of(tmp_path, name), SETTINGS)
    with pytest.raises(CmrError, match=f"format not supported: {what}"):
        read_cmr(Path(get_testdata_file(name)), SETTINGS)  # the single file, too


def test_a_dicomdir_is_an_index_not_a_series(tmp_path):
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(get_testdata_file("DICOMDIR"), alone / "DICOMDIR")
    with pytest.raises(CmrError, match="holds only a DICOMDIR"):
        read_cmr(alone, SETTINGS)
    folder = _series_from("MR_small.dcm", tmp_path / "with-index")
    shutil.copy(get_testdata_file("DICOMDIR"), folder / "DICOMDIR")
    clip = read_cmr(folder, SETTINGS)  # not a second series, so not "mixed"
    assert clip.meta["directory_files"] == 1 and clip.meta["n_series_in_folder"] == 1


def test_a_truncated_jpeg2000_file_is_called_truncated(tmp_path):
    """Before: "DICOM file has no pixel data"."""
    folder = _series_from("MR_small_jp2klossless.dcm", tmp_path / "j2k")
    victim = sorted(folder.iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:-2000])
    with pytest.raises(CmrError, match="pixel data truncated"):
        read_cmr(folder, SETTINGS)


def test_a_3d_anatomical_volume_has_no_time_axis():
    """Before: its z axis was read as 22-25 time frames."""
    with pytest.raises(CmrError, match=r"anatomical.nii: a 3D volume .* has no time axis"):
        read_cmr(NIBABEL_DATA / "anatomical.nii", CmrSettings())


@pytest.mark.parametrize("make, kind", [
    (lambda tmp: NIBABEL_DATA / "analyze.hdr", "Analyze 7.5"),
    (lambda tmp: _write_mgz(tmp), "FreeSurfer MGH"),
    (lambda tmp: _gzip(Path(get_testdata_file("MR_small.dcm")), tmp / "MR_small.dcm.gz"), "gzipped DICOM"),
])
def test_unsupported_formats_say_so(tmp_path, make, kind):
    """Before: "no DICOM files"."""
    with pytest.raises(CmrError, match=f"format not supported: .*\\({kind}\\)"):
        read_cmr(make(tmp_path), CmrSettings())


def _write_mgz(folder: Path) -> Path:
    path = folder / "cine.mgz"
    nib.save(nib.MGHImage(np.random.default_rng(0).random((8, 8, 1, 12)).astype(np.float32), np.eye(4)), str(path))
    return path


def _gzip(source: Path, target: Path) -> Path:
    target.write_bytes(gzip.compress(source.read_bytes()))
    return target


def test_a_tiny_field_of_view_is_read_with_a_padding_warning(tmp_path):
    """Before: "image is constant" (the percentiles fell in the padding)."""
    rng = np.random.default_rng(1)
    cine = rng.random((8, 8, 1, 12)).astype(np.float32) * 100  # 8 x 8 pixels of 2.5 mm: a 20 mm field of view
    affine = np.diag([2.5, 2.5, 8.0, 1.0])
    image = nib.Nifti1Image(cine, affine)
    image.header.set_xyzt_units("mm", "msec")
    image.header["pixdim"][4] = 40.0
    nib.save(image, str(tmp_path / "tiny.nii.gz"))
    clip = read_cmr(tmp_path / "tiny.nii.gz", CmrSettings())
    assert clip.frames.shape == (16, 64, 64) and clip.frames.max() == 1.0
    assert any(w.startswith("heavy padding: the source field of view (20.0 x 20.0 mm) fills 2%") for w in clip.meta["warnings"])


def test_pydicom_warnings_go_to_the_report_not_stderr(tmp_path, capsys):
    """Before: pydicom's warnings went to stderr, with no subject id; now they travel with the clip's metadata,
    which the data report lists under the subject."""
    from pydicom import config

    folder = _series_from("MR_small.dcm", tmp_path / "long-description")
    previous = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE
    try:
        for file in folder.iterdir():
            ds = pydicom.dcmread(file)
            ds.SeriesDescription = "cine sax " + "x" * 70  # longer than LO allows: pydicom warns when reading it
            ds.save_as(file)
    finally:
        config.settings.writing_validation_mode = previous
    capsys.readouterr()
    clip = read_cmr(folder, SETTINGS)
    assert any("exceeds the maximum length of 64 allowed for VR LO" in w for w in clip.meta["warnings"])
    assert "exceeds the maximum length" not in capsys.readouterr().err


def test_a_palette_colour_image_is_not_a_greyscale_mr_frame(tmp_path):
    folder = _series_from("MR_small.dcm", tmp_path / "palette")
    for file in folder.iterdir():
        ds = pydicom.dcmread(file)
        ds.PhotometricInterpretation = "PALETTE COLOR"
        ds.save_as(file)
    with pytest.raises(CmrError, match="PALETTE COLOR image: expected a greyscale"):
        read_cmr(folder, SETTINGS)
