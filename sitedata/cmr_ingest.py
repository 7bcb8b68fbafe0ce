"""CMR ingest: a DICOM folder (or single multi-frame file) or a NIfTI volume -> one model clip.
The readers pick the cine slice; `sitedata.cmr_geometry` turns it into the model's geometry."""

from __future__ import annotations

from pathlib import Path

from sitedata.cmr_dicom import read_dicom_slice
from sitedata.cmr_geometry import CmrClip, CmrError, to_model_clip
from sitedata.cmr_nifti import read_nifti_slice
from sitedata.site_config import CmrSettings

__all__ = ["CmrClip", "CmrError", "read_cmr"]

# Image formats hospitals also have, which this reader does not take (longest suffix first).
UNSUPPORTED = {".dcm.gz": "gzipped DICOM", ".mgz": "FreeSurfer MGH", ".mgh": "FreeSurfer MGH", ".hdr": "Analyze 7.5",
               ".img": "Analyze 7.5", ".mnc": "MINC", ".par": "Philips PAR/REC", ".rec": "Philips PAR/REC",
               ".nrrd": "NRRD", ".mha": "MetaImage", ".mhd": "MetaImage", ".gz": "gzip-compressed file"}


def read_cmr(path: str | Path, settings: CmrSettings) -> CmrClip:
    """Read a DICOM folder (or single multi-frame file) or a NIfTI volume into a model clip."""
    path = Path(path)
    if not path.exists():
        raise CmrError(f"CMR path not found: {path}")
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        stack, spacing, meta = read_nifti_slice(path, settings)
    elif path.is_file() and (kind := next((k for suffix, k in UNSUPPORTED.items() if name.endswith(suffix)), None)):
        raise CmrError(f"format not supported: {path.name} ({kind}); convert it to DICOM or NIfTI")
    else:
        stack, spacing, meta = read_dicom_slice(path, settings)
    return to_model_clip(stack, spacing, settings, meta)
