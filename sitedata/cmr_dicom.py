"""DICOM cine reader: group a study folder by SeriesInstanceUID, pick the cine short-axis series, choose
the slice by SliceLocation and order its frames by TriggerTime / InstanceNumber.

Pixel data is decoded by pydicom, so every transfer syntax it can decode (RLE, JPEG, JPEG-LS, JPEG 2000
through pylibjpeg) works. Only the chosen slice's files are decoded.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from sitedata.cmr_geometry import CmrError, apply_in_plane, canonical_in_plane, pick_slice_index
from sitedata.site_config import CmrSettings

_CINE_WORDS = re.compile(r"cine|sax|short|ssfp|fiesta|trufi", re.IGNORECASE)
_LONG_AXIS_WORDS = re.compile(r"2ch|3ch|4ch|lax|long|loc|scout|survey", re.IGNORECASE)


def read_dicom_slice(path: Path, settings: CmrSettings) -> tuple[np.ndarray, tuple[float, float], dict]:
    """Return (T, rows, cols) scanner-unit frames of the chosen slice, its (row, col) spacing and metadata."""
    import pydicom

    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    headers = []
    skipped = 0
    for file in files:
        try:
            headers.append((file, pydicom.dcmread(file, stop_before_pixels=True)))
        except Exception:  # not DICOM (DICOMDIR helpers, notes): counted, not fatal
            skipped += 1
    if not headers:
        raise CmrError(f"no DICOM files in {path}")

    series: dict[str, list] = defaultdict(list)
    for file, ds in headers:
        series[str(ds.get("SeriesInstanceUID", "unknown"))].append((file, ds))
    uid, members = _choose_series(series, settings, path)
    first = members[0][1]

    multiframe = int(first.get("NumberOfFrames", 1) or 1) > 1
    if multiframe:
        if len(members) != 1:
            raise CmrError(f"mixed series {uid}: several multi-frame files; expected one cine file")
        file = members[0][0]
        frames = _pixels(file)
        slice_info = {"slice_location": _slice_location(first), "n_slices": 1}
    else:
        by_slice = _group_by_slice(members)
        locations = sorted(by_slice)
        chosen = locations[pick_slice_index(len(locations), settings.slice_position)]
        ordered = sorted(by_slice[chosen], key=lambda m: (float(m[1].get("TriggerTime", 0) or 0), int(m[1].get("InstanceNumber", 0) or 0)))
        shapes = {(int(ds.Rows), int(ds.Columns)) for _, ds in ordered}
        if len(shapes) != 1:
            raise CmrError(f"mixed series {uid}: frames of one slice have different sizes {sorted(shapes)}")
        frames = np.stack([_pixels(file)[0] for file, _ in ordered])
        slice_info = {"slice_location": chosen, "n_slices": len(locations)}

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


def _pixels(file: Path) -> np.ndarray:
    """Decoded frames (n, rows, cols) in scanner units (RescaleSlope/Intercept applied)."""
    import pydicom
    from pydicom.pixels import apply_rescale

    ds = pydicom.dcmread(file)
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise CmrError(f"{file.name}: DICOM file has no pixel data")
    try:
        array = ds.pixel_array
    except Exception as err:  # missing decoder or corrupt stream
        raise CmrError(f"{file.name}: cannot decode pixel data ({ds.file_meta.get('TransferSyntaxUID', '?')}): {err}") from err
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
