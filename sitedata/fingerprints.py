"""Content fingerprints of ECG records, to find one recording held in two places without moving it.

The coordinating lab sends the fingerprints of its own held-out panel and public ECGs (the lab's data, not a
site's); each site compares them with its own records, on site, and reports only how many match. A record's
fingerprint is a hash of its first preprocessed window (the model-rate signal after ingest, rounded to 10 µV):
the same recording read by the same ingest settings gives the same fingerprint, whoever stores it and under
whatever name or path.
"""

from __future__ import annotations

import hashlib

import numpy as np

FINGERPRINT_CHARS = 32  # hex characters kept: 128 bits, no accidental matches at any cohort size
_QUANTUM_MV = 0.01


def ecg_fingerprint(windows: np.ndarray) -> str:
    """windows: (windows, leads, samples) as ingest writes them to the site cache."""
    first = np.ascontiguousarray(np.round(np.asarray(windows[0], np.float64) / _QUANTUM_MV).astype(np.int32))
    digest = hashlib.sha256(str(first.shape).encode())
    digest.update(first.tobytes())
    return digest.hexdigest()[:FINGERPRINT_CHARS]


def site_fingerprints(site) -> set[str]:
    """Every usable record's fingerprint at a prepared site (sitedata.site_data.PreparedSite)."""
    return {ecg_fingerprint(site.ecg(subject)) for subject in site.subjects}


def overlap_counts(own: set[str], theirs: dict[str, list[str]]) -> dict[str, int]:
    """How many of each named fingerprint list are among a site's own records: a count per list, nothing else."""
    return {name: len(own & set(fingerprints)) for name, fingerprints in theirs.items()}
