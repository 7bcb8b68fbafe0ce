"""`data check` at the scale of an ECG archive: an ECG-only site of N records (copies of one 12-lead, 500 Hz,
10 s WFDB record under N names, as a MIMIC-IV-ECG-style manifest), checked cold (every record decoded and
cached) and warm (every record from the cache), in one run.

    .venv/bin/python benchmarks/bench_data_check.py [--records 10000]

Prints milliseconds per record for both; targets on 2 cores: <= 50 ms uncached, <= 2 ms cached.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np

from sitedata.site_config import load_site_config
from sitedata.site_data import prepare_site
from synthetic.writers import write_wfdb
from shared_models.targets import LEADS


def write_site(root: Path, records: int) -> Path:
    template = root / "template" / "rec"
    rng = np.random.default_rng(0)
    t = np.arange(5000) / 500
    signal = np.stack([0.8 * np.sin(2 * np.pi * 1.2 * t + i) + 0.02 * rng.standard_normal(5000) for i in range(12)])
    write_wfdb(template, signal, 500, list(LEADS), "16", [])
    header, samples = template.with_suffix(".hea").read_bytes(), template.with_suffix(".dat").read_bytes()
    site = root / "archive"
    rows = []
    for i in range(records):
        folder = site / "files" / f"p{i // 1000:04d}" / f"s{i}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"r{i}.hea").write_bytes(header.replace(b"rec", f"r{i}".encode()))
        (folder / f"r{i}.dat").write_bytes(samples)
        rows.append({"subject_id": str(i), "ecg_path": f"files/p{i // 1000:04d}/s{i}/r{i}", "split": "train"})
    with (site / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["subject_id", "ecg_path", "split"])
        writer.writeheader()
        writer.writerows(rows)
    config = root / "archive.toml"
    config.write_text('[site]\nid = "archive"\ndata_root = "archive"\nmanifest = "manifest.csv"\nmodalities = ["ecg"]\n')
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = load_site_config(write_site(Path(tmp), args.records))
        timings = {}
        for run in ("uncached", "cached"):
            start = time.perf_counter()
            site = prepare_site(config)
            timings[run] = time.perf_counter() - start
            assert len(site.subjects) == args.records, site.report.problems[:3]
    for run, seconds in timings.items():
        print(f"{run:9s} {args.records} records in {seconds:7.1f} s: {1000 * seconds / args.records:6.2f} ms per record")
    print(f"cache speed-up {timings['uncached'] / timings['cached']:.1f}x")


if __name__ == "__main__":
    main()
