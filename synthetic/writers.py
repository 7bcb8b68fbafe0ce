"""Write synthetic studies in the formats hospitals hold: WFDB ECG records, DICOM cine series, NIfTI."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# A typical oblique short-axis orientation (LPS): columns run along ROW_COSINE, rows along COL_COSINE.
_ROW = np.array([0.80, 0.45, -0.40])
ROW_COSINE = _ROW / np.linalg.norm(_ROW)
_COL = np.array([-0.25, 0.55, 0.80])
_COL = _COL - (_COL @ ROW_COSINE) * ROW_COSINE
COL_COSINE = _COL / np.linalg.norm(_COL)
NORMAL = np.cross(ROW_COSINE, COL_COSINE)
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def write_wfdb(path: Path, signal_mv: np.ndarray, fs: int, lead_names: list[str], fmt: str, comments: list[str]) -> None:
    """`signal_mv` (leads, samples) -> `<path>.hea` + `<path>.dat`."""
    import wfdb

    path.parent.mkdir(parents=True, exist_ok=True)
    gain = 1000.0 if fmt == "16" else 200.0  # 1 µV steps in 16 bit; 5 µV steps in 12-bit format 212
    wfdb.wrsamp(
        path.name, fs=fs, units=["mV"] * len(lead_names), sig_name=list(lead_names),
        p_signal=np.ascontiguousarray(signal_mv.T), fmt=[fmt] * len(lead_names),
        adc_gain=[gain] * len(lead_names), baseline=[0] * len(lead_names),
        comments=comments, write_dir=str(path.parent),
    )


def write_dicom_cine(folder: Path, cine: np.ndarray, spacing_mm: float, slice_gap_mm: float, heart_rate: float,
                     subject: str, uid_seed: str, rescale_slope: float = 2.0, manufacturer: str = "SYNTHETIC") -> None:
    """(slices, frames, rows, cols) stored values -> one DICOM file per image, plus a localizer series."""
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    study_uid = generate_uid(entropy_srcs=[uid_seed, "study"])
    cine_uid = generate_uid(entropy_srcs=[uid_seed, "cine"])
    slices, frames = cine.shape[:2]
    rr_ms = 60000.0 / heart_rate
    for s in range(slices):
        location = _slice_location(s, slices, slice_gap_mm)
        position = _slice_origin(s, cine.shape, spacing_mm, slice_gap_mm)
        for f in range(frames):
            ds = _mr_dataset(study_uid, cine_uid, generate_uid(entropy_srcs=[uid_seed, str(s), str(f)]), subject,
                             manufacturer)
            ds.SeriesDescription = "cine_sax bSSFP"
            ds.SeriesNumber = 5
            ds.InstanceNumber = s * frames + f + 1
            ds.TriggerTime = round(f * rr_ms / frames, 1)
            ds.CardiacNumberOfImages = frames
            ds.SliceLocation = round(float(location), 2)
            ds.SliceThickness = 8.0
            ds.ImagePositionPatient = [round(float(v), 4) for v in position]
            _set_pixels(ds, cine[s, f], spacing_mm, rescale_slope)
            ds.save_as(folder / f"IM_{s:02d}_{f:03d}.dcm", enforce_file_format=True)
    # A single-image localizer series in the same folder: the reader must pick the cine itself.
    ds = _mr_dataset(study_uid, generate_uid(entropy_srcs=[uid_seed, "loc"]), generate_uid(entropy_srcs=[uid_seed, "loc", "0"]), subject,
                     manufacturer)
    ds.SeriesDescription = "localizer"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = [round(float(v), 4) for v in _slice_origin(slices // 2, cine.shape, spacing_mm, slice_gap_mm)]
    _set_pixels(ds, cine[slices // 2, 0, ::2, ::2], spacing_mm * 2, rescale_slope)
    ds.save_as(folder / "LOC_0001.dcm", enforce_file_format=True)


def _slice_location(index: int, slices: int, slice_gap_mm: float) -> float:
    """Position along the slice normal, the stack centred on 0."""
    return (index - (slices - 1) / 2) * slice_gap_mm


def _slice_origin(index: int, shape: tuple, spacing_mm: float, slice_gap_mm: float) -> np.ndarray:
    """LPS position of the first pixel of slice `index`; DICOM and NIfTI share this geometry."""
    slices, _, rows, cols = shape
    corner = -(rows / 2) * spacing_mm * COL_COSINE - (cols / 2) * spacing_mm * ROW_COSINE
    return corner + _slice_location(index, slices, slice_gap_mm) * NORMAL


def _mr_dataset(study_uid: str, series_uid: str, sop_uid: str, subject: str, manufacturer: str):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[study_uid, "frame-of-reference"])
    ds.PatientID = subject
    ds.PatientName = "Synthetic^" + subject
    ds.Modality = "MR"
    ds.Manufacturer = manufacturer
    ds.ImageOrientationPatient = [round(float(v), 6) for v in (*ROW_COSINE, *COL_COSINE)]
    return ds


def _set_pixels(ds, image: np.ndarray, spacing_mm: float, rescale_slope: float) -> None:
    stored = np.clip(np.round(image / rescale_slope), 0, 4095).astype(np.uint16)
    ds.Rows, ds.Columns = stored.shape
    ds.PixelSpacing = [spacing_mm, spacing_mm]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleSlope = rescale_slope
    ds.RescaleIntercept = 0
    ds.PixelData = stored.tobytes()


def write_nifti(path: Path, cine: np.ndarray, spacing_mm: float, slice_gap_mm: float, scale: float = 0.5) -> None:
    """(slices, frames, rows, cols) -> 4D NIfTI (i = column, j = row, k = slice, t) with an RAS affine that
    matches the DICOM geometry above, stored as int16 with scl_slope = `scale`."""
    import nibabel as nib

    data = np.transpose(cine, (3, 2, 0, 1))  # (cols, rows, slices, frames)
    lps_to_ras = np.array([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    affine[:3, 0] = ROW_COSINE * spacing_mm * lps_to_ras
    affine[:3, 1] = COL_COSINE * spacing_mm * lps_to_ras
    affine[:3, 2] = NORMAL * slice_gap_mm * lps_to_ras
    affine[:3, 3] = _slice_origin(0, cine.shape, spacing_mm, slice_gap_mm) * lps_to_ras
    image = nib.Nifti1Image(np.clip(np.round(data / scale), -32768, 32767).astype(np.int16), affine)
    image.header.set_slope_inter(scale, 0.0)
    image.header.set_xyzt_units("mm", "msec")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
