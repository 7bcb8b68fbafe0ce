"""Synthetic multi-site ECG-CMR cohort written in real file formats (WFDB, DICOM, NIfTI)."""
