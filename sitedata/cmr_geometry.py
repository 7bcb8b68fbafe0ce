"""CMR geometry shared by the DICOM and NIfTI readers: one short-axis cine slice in scanner units and its
pixel spacing become a model clip of fixed spacing, size and frame count, normalised per study.

Orientation: both readers turn the slice so that each in-plane axis points along the positive direction of
its dominant patient (LPS) axis; a DICOM series and its NIfTI conversion then give the same clip.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from sitedata.heart_localisation import locate_heart
from sitedata.site_config import AUTO_ROI, CmrSettings


class CmrError(ValueError):
    """A study that cannot give a usable cine clip; the message says why."""


@dataclass
class CmrClip:
    frames: np.ndarray  # (F, H, W) float32 in [0, 1], one short-axis slice over one cardiac cycle
    meta: dict = field(default_factory=dict)  # source spacing, frame count, series, slice, intensity window …


def to_model_clip(stack: np.ndarray, spacing_mm: tuple[float, float], settings: CmrSettings, meta: dict) -> CmrClip:
    """(T, rows, cols) in scanner units with (row, col) spacing -> normalised (frames, size, size) clip.
    Problems that leave the clip usable are listed in meta["warnings"] (shown in the data report)."""
    if stack.ndim != 3 or stack.shape[0] < 2:
        raise CmrError(f"a cine needs at least 2 time frames of 2D images, got array of shape {stack.shape}")
    if stack.shape[0] < settings.min_source_frames:
        raise CmrError(f"only {stack.shape[0]} time points; a cine needs at least {settings.min_source_frames} "
                       f"(cmr.min_source_frames); fewer would be interpolated into frames that were never acquired")
    if not np.isfinite(stack).all():
        raise CmrError("image contains NaN or infinite values")
    warnings = list(meta.get("warnings", []))
    resampled = resample_in_plane(stack.astype(np.float32), spacing_mm, settings.pixel_spacing_mm)
    roi, heart_offset_mm = _roi_centre(resampled, settings, warnings)
    cropped, offsets, valid = crop_or_pad(resampled, settings.image_size, roi)
    covered = (valid[1] - valid[0]) * (valid[3] - valid[2]) / settings.image_size ** 2
    if covered < 0.5:
        field_mm = [round(n * s, 1) for n, s in zip(stack.shape[1:], spacing_mm)]
        warnings.append(f"heavy padding: the source field of view ({field_mm[0]} x {field_mm[1]} mm) fills "
                        f"{covered:.0%} of the model's ({settings.image_size * settings.pixel_spacing_mm:g} mm square)")
    clip = resample_frames(cropped, settings.frames)
    normalised, window = normalise(clip, valid)
    meta = dict(meta)
    meta.update({
        "source_shape": list(stack.shape),
        "source_spacing_mm": [float(s) for s in spacing_mm],
        "spacing_mm": settings.pixel_spacing_mm,
        "crop_offsets": offsets,
        "heart_offset_mm": heart_offset_mm,  # the LV centre found, from the image centre (row, col); None: not sought or found
        "intensity_window": window,
        "warnings": warnings,
    })
    return CmrClip(frames=normalised, meta=meta)


def _roi_centre(stack: np.ndarray, settings: CmrSettings, warnings: list[str]):
    """(the window's centre as (row, col) fractions or None for the image centre, the LV's offset in mm)."""
    if settings.roi_center != AUTO_ROI:
        return settings.roi_center, None
    found = locate_heart(stack, settings.pixel_spacing_mm)
    if found.centre is None:
        warnings.append(f"heart not localised: {found.reason}; cropped at the image centre")
        return None, None
    rows, cols = stack.shape[1:]
    row, col = found.centre
    offset = [round((row - (rows - 1) / 2) * settings.pixel_spacing_mm, 1),
              round((col - (cols - 1) / 2) * settings.pixel_spacing_mm, 1)]
    return ((row + 0.5) / rows, (col + 0.5) / cols), offset


def check_motion(frames: np.ndarray, what: str) -> None:
    """A cine changes over time; identical frames are a static image (a copied instance, a misread volume)."""
    spread = float(np.abs(frames - frames[:1]).max()) if len(frames) > 1 else 0.0
    if len(frames) > 1 and spread <= 1e-6 * max(float(np.ptp(frames)), 1.0):
        raise CmrError(f"{what}: its {len(frames)} frames are identical: a static image, not a cine")


def resample_in_plane(stack: np.ndarray, spacing_mm: tuple[float, float], target_mm: float) -> np.ndarray:
    """Linear resampling to `target_mm` pixels; a Gaussian pre-filter stops aliasing when shrinking."""
    zoom = np.array([spacing_mm[0] / target_mm, spacing_mm[1] / target_mm])
    if np.any(zoom <= 0) or not np.all(np.isfinite(zoom)):
        raise CmrError(f"invalid pixel spacing {spacing_mm}")
    sigma = np.maximum(0.0, (1.0 / zoom - 1.0) / 2.0)  # same rule as skimage's anti_aliasing
    if np.any(sigma > 0):
        stack = ndimage.gaussian_filter(stack, sigma=(0, *sigma), mode="nearest")
    if np.allclose(zoom, 1.0):
        return stack
    return ndimage.zoom(stack, (1, *zoom), order=1, mode="nearest", grid_mode=True)


def crop_or_pad(stack: np.ndarray, size: int, roi_center: tuple[float, float] | None) -> tuple[np.ndarray, list[int], tuple[int, int, int, int]]:
    """Cut a size x size window around the ROI centre (default: image centre); pad with the image minimum
    where the field of view is smaller than the window (the padding is recorded in the metadata).
    -> (window, [top, left], the image's rows and columns in the window as (r0, r1, c0, c1))."""
    _, rows, cols = stack.shape
    centre = roi_center or (0.5, 0.5)
    top = int(round(centre[0] * rows - size / 2))
    left = int(round(centre[1] * cols - size / 2))
    out = np.full((stack.shape[0], size, size), stack.min(), dtype=np.float32)
    src_r0, src_c0 = max(top, 0), max(left, 0)
    src_r1, src_c1 = min(top + size, rows), min(left + size, cols)
    out[:, src_r0 - top:src_r1 - top, src_c0 - left:src_c1 - left] = stack[:, src_r0:src_r1, src_c0:src_c1]
    return out, [top, left], (src_r0 - top, src_r1 - top, src_c0 - left, src_c1 - left)


def resample_frames(stack: np.ndarray, n_frames: int) -> np.ndarray:
    """Periodic linear interpolation over the cardiac cycle (frame T wraps to frame 0)."""
    n_src = stack.shape[0]
    if n_src == n_frames:
        return stack
    position = np.arange(n_frames) * n_src / n_frames
    lower = np.floor(position).astype(int) % n_src
    upper = (lower + 1) % n_src
    weight = (position - np.floor(position))[:, None, None].astype(np.float32)
    return (1 - weight) * stack[lower] + weight * stack[upper]


def normalise(clip: np.ndarray, valid: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, list[float]]:
    """Per-study robust scaling: the 1st-99th percentile range of the image (not its padding) maps to [0, 1]
    (scanner scales differ)."""
    r0, r1, c0, c1 = valid or (0, clip.shape[1], 0, clip.shape[2])
    low, high = np.percentile(clip[:, r0:r1, c0:c1], [1.0, 99.0])
    if high - low <= 1e-6 * max(1.0, abs(high)):
        raise CmrError("image is constant (no contrast to normalise)")
    return np.clip((clip - low) / (high - low), 0.0, 1.0).astype(np.float32), [float(low), float(high)]


def canonical_in_plane(image_axes_lps: np.ndarray) -> tuple[bool, bool, bool]:
    """From the LPS direction of the (row-index, col-index) axes, decide (transpose, flip_rows, flip_cols)
    so that afterwards rows point along the larger of their P/S component and columns along L."""
    row_dir, col_dir = image_axes_lps  # direction in which the row index / column index increases
    transpose = abs(row_dir[0]) > abs(col_dir[0])  # columns should be the axis closest to patient L
    if transpose:
        row_dir, col_dir = col_dir, row_dir
    flip_rows = row_dir[np.argmax(np.abs(row_dir))] < 0
    flip_cols = col_dir[np.argmax(np.abs(col_dir))] < 0
    return bool(transpose), bool(flip_rows), bool(flip_cols)


def apply_in_plane(stack: np.ndarray, transpose: bool, flip_rows: bool, flip_cols: bool) -> np.ndarray:
    if transpose:
        stack = stack.transpose(0, 2, 1)
    if flip_rows:
        stack = stack[:, ::-1, :]
    if flip_cols:
        stack = stack[:, :, ::-1]
    return np.ascontiguousarray(stack)


def pick_slice_index(n_slices: int, position: float) -> int:
    return int(round(position * (n_slices - 1)))
