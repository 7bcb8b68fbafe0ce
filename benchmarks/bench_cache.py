"""Preprocessing cache speed-up: decode every record (WFDB / DICOM / NIfTI -> model tensors) versus load
the same tensors from the on-site cache, one run, same records.

    .venv/bin/python benchmarks/bench_cache.py [--subjects 40]

Prints seconds per record for both paths and their ratio (the target is >= 20x).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np

from sitedata.site_config import load_site_config
from sitedata.site_data import _decode_cmr, _decode_ecg, prepare_site
from synthetic.cohort import generate_cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        configs = generate_cohort(Path(tmp), n_sites=3, subjects=args.subjects, seed=0)
        print(f"{'site':12s} {'records':>8s} {'decode s/rec':>13s} {'cache s/rec':>12s} {'speed-up':>9s}")
        total_decode = total_cache = 0.0
        for path in configs:
            config = load_site_config(path)
            site = prepare_site(config)  # fills the cache
            rows = {s.subject_id: s for s in site.subjects}
            with config.manifest.open() as handle:
                manifest = {r["subject_id"]: r for r in csv.DictReader(handle)}

            start = time.perf_counter()
            for subject_id in rows:
                row = manifest[subject_id]
                _decode_ecg(config.data_root / row["ecg_path"], config)
                if row["cmr_path"] and "cmr" in config.modalities:
                    _decode_cmr(config.data_root / row["cmr_path"], config)
            decode = time.perf_counter() - start

            # What a training round does: open each cached entry and read every value.
            start = time.perf_counter()
            checksum = 0.0
            for subject in site.subjects:
                checksum += float(np.asarray(site.ecg(subject)).sum())
                cmr = site.cmr(subject)
                if cmr is not None:
                    checksum += float(np.asarray(cmr).sum())
            cached = time.perf_counter() - start
            n = len(site.subjects)
            total_decode, total_cache = total_decode + decode, total_cache + cached
            print(f"{config.site_id:12s} {n:8d} {decode / n:13.5f} {cached / n:12.5f} {decode / cached:8.1f}x")
        print(f"{'all':12s} {'':8s} {'':13s} {'':12s} {total_decode / total_cache:8.1f}x")


if __name__ == "__main__":
    main()
