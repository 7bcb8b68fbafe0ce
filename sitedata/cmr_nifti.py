"""NIfTI cine reader (`.nii`, `.nii.gz`): 4D (x, y, slice, time) volumes (a single-slice cine is (x, y, 1, time)),
with spacing and in-plane orientation taken from the affine. A 3D volume has no time axis (NIfTI keeps time in
the 4th dimension) and is refused, as are too few time points and frames that do not change; the header's
time step gives the temporal resolution, reported when it is low."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sitedata.cmr_geometry import CmrError, apply_in_plane, canonical_in_plane, check_motion, pick_slice_index
from sitedata.site_config import CmrSettings

_RAS_TO_LPS = np.array([-1.0, -1.0, 1.0])


def read_nifti_slice(path: Path, settings: CmrSettings) -> tuple[np.ndarray, tuple[float, float], dict]:
    """Return (T, rows, cols) frames of the chosen slice, (row, col) spacing in mm and metadata."""
    import nibabel as nib

    try:
        image = nib.load(str(path))
    except Exception as err:
        raise CmrError(f"{path.name}: not a readable NIfTI file: {err}") from err
    shape = image.shape
    # Trailing singleton dimensions (x, y, z, t, 1) are harmless; anything else must be 3D+t or 2D+t.
    while len(shape) > 4 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) == 3:
        raise CmrError(f"{path.name}: a 3D volume {tuple(image.shape)} has no time axis (NIfTI keeps time in the 4th "
                       f"dimension): a static image, not a cine; a single-slice cine is stored as (x, y, 1, time)")
    if len(shape) != 4:
        raise CmrError(f"{path.name}: wrong dimensions {image.shape}; expected 4D (x, y, slice, time)")
    n_slices, n_frames = shape[2], shape[3]
    if n_frames < 2:
        raise CmrError(f"{path.name}: {n_frames} time frame(s); a cine needs at least 2 (shape {image.shape})")
    warnings = _time_resolution_warnings(image, settings)

    slice_index = pick_slice_index(n_slices, settings.slice_position)
    # Only the chosen slice is read; dataobj applies the header's scl_slope/scl_inter.
    extra = (0,) * (len(image.shape) - len(shape))  # drop the trailing singleton axes
    if len(shape) == 4:
        volume = np.asarray(image.dataobj[(slice(None), slice(None), slice_index, slice(None)) + extra])
    else:
        volume = np.asarray(image.dataobj[(slice(None),) * 3 + extra])
    frames = np.moveaxis(volume, -1, 0).transpose(0, 2, 1).astype(np.float32)  # (T, j, i): rows follow j
    check_motion(frames, path.name)

    affine = image.affine
    spacing_i, spacing_j = (float(np.linalg.norm(affine[:3, k])) for k in (0, 1))
    if not (spacing_i > 0 and spacing_j > 0):
        raise CmrError(f"{path.name}: affine has zero voxel size")
    direction_i = affine[:3, 0] / spacing_i * _RAS_TO_LPS
    direction_j = affine[:3, 1] / spacing_j * _RAS_TO_LPS
    transpose, flip_rows, flip_cols = canonical_in_plane(np.stack([direction_j, direction_i]))
    frames = apply_in_plane(frames, transpose, flip_rows, flip_cols)
    spacing = (spacing_i, spacing_j) if transpose else (spacing_j, spacing_i)
    slice_axis = affine[:3, 2] * _RAS_TO_LPS
    meta = {
        "format": "nifti",
        "source_dims": list(image.shape),
        "n_slices": n_slices,
        "slice_index": slice_index,
        "warnings": warnings,
        "slice_location": float(np.dot(affine[:3, 3] * _RAS_TO_LPS + slice_index * slice_axis, slice_axis / max(np.linalg.norm(slice_axis), 1e-9))),
    }
    return frames, spacing, meta


_MS_PER_UNIT = {"sec": 1000.0, "msec": 1.0, "usec": 1e-3}


def _time_resolution_warnings(image, settings: CmrSettings) -> list[str]:
    """The frame interval from the header (pixdim[4] in its time unit), when it says one."""
    unit = image.header.get_xyzt_units()[1]
    step = float(image.header["pixdim"][4])
    if unit not in _MS_PER_UNIT or step <= 0:
        return []
    interval = step * _MS_PER_UNIT[unit]
    if interval > settings.max_frame_interval_ms:
        return [f"low temporal resolution: {interval:g} ms between frames (more than cmr.max_frame_interval_ms = "
                f"{settings.max_frame_interval_ms:g})"]
    return []
