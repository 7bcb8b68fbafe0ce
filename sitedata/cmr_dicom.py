"""DICOM cine reader: group a study folder by SeriesInstanceUID, keep the MR image series, pick the cine short-axis
series, choose the slice by SliceLocation and order its frames by TriggerTime / InstanceNumber.

What is refused, with what it is: objects that are not MR images (RT dose, segmentations, ECG waveforms,
structured reports; a DICOMDIR index is skipped, not counted as a series), colour or palette images, a series
whose files repeat one SOPInstanceUID (copies of one image), and frames that do not change over time (a static
image is not a cine). pydicom's warnings are kept for the data report, with the subject they belong to.

Pixel data is decoded by pydicom, so every transfer syntax it can decode (RLE, JPEG, JPEG-LS, JPEG 2000
through pylibjpeg) works. Only the chosen slice's files are decoded.
"""

from __future__ import annotations

import re
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

from sitedata.cmr_geometry import CmrError, apply_in_plane, canonical_in_plane, check_motion, pick_slice_index
from sitedata.site_config import CmrSettings

_CINE_WORDS = re.compile(r"cine|sax|short|ssfp|fiesta|trufi", re.IGNORECASE)
_LONG_AXIS_WORDS = re.compile(r"2ch|3ch|4ch|lax|long|loc|scout|survey", re.IGNORECASE)
# MR Image Storage, Enhanced MR Image Storage, Legacy Converted Enhanced MR Image Storage
MR_IMAGE_CLASSES = {"1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.4.4"}
DIRECTORY_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory (DICOMDIR)
GREYSCALE = {"MONOCHROME1", "MONOCHROME2"}


def _read(file: Path, warned: list[str], **kwargs):
    """pydicom.dcmread, its warnings kept (named by file) instead of going to stderr."""
    import pydicom

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = pydicom.dcmread(file, **kwargs)
    warned += [f"{file.name}: {w.message}" for w in caught if f"{file.name}: {w.message}" not in warned]
    return ds


def describe(ds) -> str:
    """What a DICOM object is, in words: its SOP class name and modality."""
    sop = ds.get("SOPClassUID") or (ds.file_meta.get("MediaStorageSOPClassUID") if hasattr(ds, "file_meta") else None)
    name = getattr(sop, "name", None) or str(sop or "unknown SOP class")
    return f"{name} (modality {ds.get('Modality', '?')})"


def refusal(ds) -> str | None:
    """Why this object cannot be a frame of an MR cine, or None."""
    sop = str(ds.get("SOPClassUID", ""))
    if str(ds.get("Modality", "")) != "MR" or (sop and sop not in MR_IMAGE_CLASSES):
        return f"format not supported: {describe(ds)} is not an MR image"
    if "Rows" not in ds or "Columns" not in ds:
        return f"format not supported: {describe(ds)} has no image"
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric not in GREYSCALE:
        return f"{photometric} image: expected a greyscale (MONOCHROME) MR frame"
    if int(ds.get("BitsAllocated", 16)) == 1:
        return "1-bit image (a binary mask, not an MR frame)"
    return None


def read_dicom_slice(path: Path, settings: CmrSettings) -> tuple[np.ndarray, tuple[float, float], dict]:
    """Return (T, rows, cols) scanner-unit frames of the chosen slice, its (row, col) spacing and metadata
    (pydicom's warnings in meta["warnings"], for the data report, instead of on stderr)."""
    warned: list[str] = []
    with warnings.catch_warnings(record=True) as caught:  # pydicom also warns later, when a value is first used
        warnings.simplefilter("always")
        frames, spacing, meta = _read_dicom_slice(path, settings, warned)
    later = [f"pydicom: {w.message}" for w in caught]
    meta["warnings"] = list(dict.fromkeys(warned + later))
    return frames, spacing, meta


def _read_dicom_slice(path: Path, settings: CmrSettings, warned: list[str]):
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    headers, refused = [], {}
    skipped = directories = 0
    for file in files:
        try:
            ds = _read(file, warned, stop_before_pixels=True)
        except Exception:  # not DICOM (notes, helper files): counted, not fatal
            skipped += 1
            continue
        if file.name.upper() == "DICOMDIR" or str(ds.file_meta.get("MediaStorageSOPClassUID", "")) == DIRECTORY_CLASS:
            directories += 1  # an index of the folder, not a series
            continue
        why = refusal(ds)
        if why:
            refused.setdefault(why, []).append(file.name)
        else:
            headers.append((file, ds))
    if not headers:
        if refused:
            why, names = next(iter(refused.items()))
            raise CmrError(f"{why} ({len(names)} file(s), e.g. {names[0]})")
        if path.is_file():
            raise CmrError(f"format not supported: {path.name} is neither DICOM nor NIfTI")
        if directories:
            raise CmrError(f"{path} holds only a DICOMDIR (an index of a DICOM folder), no images")
        raise CmrError(f"no DICOM files in {path}")

    series: dict[str, list] = defaultdict(list)
    for file, ds in headers:
        series[str(ds.get("SeriesInstanceUID", "unknown"))].append((file, ds))
    uid, members = _choose_series(series, settings, path)
    first = members[0][1]
    _check_distinct_instances(members, uid)

    multiframe = int(first.get("NumberOfFrames", 1) or 1) > 1
    if multiframe:
        if len(members) != 1:
            raise CmrError(f"mixed series {uid}: several multi-frame files; expected one cine file")
        file = members[0][0]
        frames = _pixels(file, warned)
        slice_info = {"slice_location": _slice_location(first), "n_slices": 1}
    else:
        by_slice = _group_by_slice(members)
        locations = sorted(by_slice)
        chosen = locations[pick_slice_index(len(locations), settings.slice_position)]
        ordered = sorted(by_slice[chosen], key=lambda m: (float(m[1].get("TriggerTime", 0) or 0), int(m[1].get("InstanceNumber", 0) or 0)))
        shapes = {(int(ds.Rows), int(ds.Columns)) for _, ds in ordered}
        if len(shapes) != 1:
            raise CmrError(f"mixed series {uid}: frames of one slice have different sizes {sorted(shapes)}")
        frames = np.stack([_pixels(file, warned)[0] for file, _ in ordered])
        slice_info = {"slice_location": chosen, "n_slices": len(locations)}

    check_motion(frames, f"series {uid}")
    spacing = _pixel_spacing(first, uid)
    transpose, flip_rows, flip_cols = _orientation(first)
    frames = apply_in_plane(frames, transpose, flip_rows, flip_cols)
    if transpose:
        spacing = (spacing[1], spacing[0])
    meta = {
        "format": "dicom",
        "series_uid": uid,
        "series_description": str(first.get("SeriesDescription", "")),
        "transfer_syntax": str(first.file_meta.get("TransferSyntaxUID", "")) if hasattr(first, "file_meta") else "",
        "n_series_in_folder": len(series),
        "non_dicom_files": skipped,
        "directory_files": directories,
        "refused_files": sum(len(v) for v in refused.values()),
        "warnings": warned,
        **slice_info,
    }
    return frames, spacing, meta


def _choose_series(series: dict[str, list], settings: CmrSettings, path: Path):
    if settings.series_description:
        pattern = re.compile(settings.series_description)
        matches = {uid: m for uid, m in series.items() if pattern.search(str(m[0][1].get("SeriesDescription", "")))}
        if not matches:
            found = sorted({str(m[0][1].get("SeriesDescription", "")) for m in series.values()})
            raise CmrError(f"no series matches cmr.series_description={settings.series_description!r} in {path} (found: {found})")
        if len(matches) > 1:
            raise CmrError(f"mixed series: {len(matches)} series match {settings.series_description!r} in {path}")
        return next(iter(matches.items()))
    if len(series) == 1:
        return next(iter(series.items()))
    scored = sorted(((_cine_score(m), uid) for uid, m in series.items()), reverse=True)
    if scored[0][0] == scored[1][0]:
        found = sorted(str(series[uid][0][1].get("SeriesDescription", "")) for _, uid in scored)
        raise CmrError(
            f"mixed series: {len(series)} series in {path} and none is clearly the cine short axis "
            f"(descriptions {found}); set cmr.series_description in the site config"
        )
    uid = scored[0][1]
    return uid, series[uid]


def _cine_score(members) -> int:
    """Cine short axis: several time points per slice, several slices, a cine-like name, no long-axis name."""
    description = str(members[0][1].get("SeriesDescription", ""))
    times = {m[1].get("TriggerTime") for m in members}
    locations = {_slice_location(m[1]) for m in members}
    score = 2 * bool(_CINE_WORDS.search(description)) - 3 * bool(_LONG_AXIS_WORDS.search(description))
    score += 2 * (len(times) > 1 or int(members[0][1].get("NumberOfFrames", 1) or 1) > 1)
    score += len(locations) > 1
    return score


def _group_by_slice(members) -> dict[float, list]:
    by_slice: dict[float, list] = defaultdict(list)
    for file, ds in members:
        by_slice[_slice_location(ds)].append((file, ds))
    return by_slice


def _slice_location(ds) -> float:
    """SliceLocation when present, else the image position projected on the slice normal."""
    if "SliceLocation" in ds:
        return round(float(ds.SliceLocation), 2)
    if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
        iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
        normal = np.cross(iop[:3], iop[3:])
        return round(float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float))), 2)
    return 0.0


def _check_distinct_instances(members, uid: str) -> None:
    """Copies of one image (one SOPInstanceUID, perhaps re-encoded) are not the frames of a cine."""
    seen: dict[str, int] = defaultdict(int)
    for _, ds in members:
        seen[str(ds.get("SOPInstanceUID", ""))] += 1
    repeated = {k: n for k, n in seen.items() if k and n > 1}
    if repeated:
        instance, count = next(iter(repeated.items()))
        raise CmrError(f"series {uid}: {count} files share SOPInstanceUID {instance} (copies of one image, not a cine)")


def _pixels(file: Path, warned: list[str]) -> np.ndarray:
    """Decoded frames (n, rows, cols) in scanner units (RescaleSlope/Intercept applied)."""
    from pydicom.pixels import apply_rescale

    before = len(warned)
    ds = _read(file, warned)
    syntax = ds.file_meta.get("TransferSyntaxUID", "?") if hasattr(ds, "file_meta") else "?"
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        if any("End of file" in w or "truncated" in w.lower() for w in warned[before:]):
            raise CmrError(f"{file.name}: pixel data truncated: the file ends before its pixel data does "
                           f"({getattr(syntax, 'name', syntax)})")
        raise CmrError(f"{file.name}: DICOM file has no pixel data")
    try:
        array = ds.pixel_array
    except Exception as err:  # missing decoder or corrupt stream
        raise CmrError(f"{file.name}: pixel data truncated or undecodable ({getattr(syntax, 'name', syntax)}): {err}") from err
    if array.ndim == 3 and int(ds.get("SamplesPerPixel", 1)) > 1:
        raise CmrError(f"{file.name}: colour image, expected a greyscale MR frame")
    array = apply_rescale(array, ds).astype(np.float32)
    return array[None] if array.ndim == 2 else array


def _pixel_spacing(ds, uid: str) -> tuple[float, float]:
    spacing = ds.get("PixelSpacing")
    if spacing is None:
        sequence = ds.get("SharedFunctionalGroupsSequence")
        try:
            spacing = sequence[0].PixelMeasuresSequence[0].PixelSpacing
        except (TypeError, AttributeError, IndexError):
            raise CmrError(f"series {uid}: no PixelSpacing, cannot resample to a fixed spacing") from None
    return float(spacing[0]), float(spacing[1])


def _orientation(ds) -> tuple[bool, bool, bool]:
    iop = ds.get("ImageOrientationPatient")
    if iop is None:
        return False, False, False
    iop = np.asarray(iop, dtype=float)
    # DICOM: the column index grows along iop[:3], the row index along iop[3:] (both already LPS).
    return canonical_in_plane(np.stack([iop[3:], iop[:3]]))
