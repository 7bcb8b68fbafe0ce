"""A site with bad records: each is reported with file and reason, valid records go on; the cache."""

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

import sitedata.site_data as site_data
from cardiacfl.cli import app
from sitedata.site_config import load_site_config
from sitedata.site_data import prepare_site
from synthetic.writers import write_wfdb


def _rows(site_dir: Path) -> list[dict]:
    with (site_dir / "manifest.csv").open() as handle:
        return list(csv.DictReader(handle))


def _reasons(report, subject_id):
    return [p for p in report.problems if p.subject_id == subject_id]


def test_bad_records_are_reported_and_valid_ones_kept(tiny_cohort):
    a, b = tiny_cohort / "hospital-a", tiny_cohort / "hospital-b"
    rows_a, rows_b = _rows(a), _rows(b)

    dat = a / (rows_a[0]["ecg_path"] + ".dat")
    dat.write_bytes(dat.read_bytes()[:1000])  # truncated .dat
    (a / (rows_a[1]["ecg_path"] + ".hea")).write_text("garbage header\n")  # malformed header
    for file in (a / rows_a[2]["ecg_path"]).parent.iterdir():  # missing ECG files
        file.unlink()
    for file in (a / rows_a[3]["cmr_path"]).glob("IM_*.dcm"):  # DICOM without pixel data
        ds = pydicom.dcmread(file)
        del ds.PixelData
        ds.save_as(file)
    with (a / "manifest.csv").open("a", newline="") as handle:  # duplicate subject id
        csv.DictWriter(handle, fieldnames=list(rows_a[0])).writerow({**rows_a[5], "split": "test"})

    nib.save(nib.Nifti1Image(np.zeros((4, 4), np.int16), np.eye(4)), str(b / rows_b[0]["cmr_path"]))  # wrong dims
    six = ["I", "II", "III", "aVR", "aVL", "aVF"]
    write_wfdb(b / rows_b[1]["ecg_path"], np.random.default_rng(0).normal(0, 0.3, (6, 10000)), 1000, six, "16", [])
    nan_signal = np.random.default_rng(1).normal(0, 0.3, (12, 10000))
    nan_signal[9, 50:80] = np.nan
    names = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    write_wfdb(b / rows_b[2]["ecg_path"], nan_signal, 1000, names, "16", [])

    site_a = prepare_site(load_site_config(tiny_cohort / "site_configs" / "hospital-a.toml"))
    report = site_a.report
    assert "truncated signal file" in _reasons(report, rows_a[0]["subject_id"])[0].reason
    assert _reasons(report, rows_a[0]["subject_id"])[0].file.endswith(rows_a[0]["ecg_path"])
    assert "malformed WFDB header" in _reasons(report, rows_a[1]["subject_id"])[0].reason
    assert "header not found" in _reasons(report, rows_a[2]["subject_id"])[0].reason
    cmr_problem = _reasons(report, rows_a[3]["subject_id"])[0]
    assert cmr_problem.modality == "cmr" and "no pixel data" in cmr_problem.reason and "kept as ECG-only" in cmr_problem.reason
    assert any("duplicate subject id" in p.reason for p in _reasons(report, rows_a[5]["subject_id"]))
    kept = {s.subject_id: s for s in site_a.subjects}
    assert len(kept) == 8 - 3
    assert kept[rows_a[3]["subject_id"]].cmr_key is None
    assert kept[rows_a[5]["subject_id"]].split == rows_a[5]["split"]  # the first row wins
    assert sum(1 for s in site_a.subjects if s.cmr_key) == 4
    valid = kept[rows_a[4]["subject_id"]]
    assert site_a.ecg(valid).shape == (1, 12, 5000) and site_a.cmr(valid).shape == (16, 64, 64)
    assert np.isfinite(valid.indicators).all() or np.isnan(valid.indicators).all()

    site_b = prepare_site(load_site_config(tiny_cohort / "site_configs" / "hospital-b.toml"))
    assert "wrong dimensions" in _reasons(site_b.report, rows_b[0]["subject_id"])[0].reason
    assert "6 of 12 standard leads" in _reasons(site_b.report, rows_b[1]["subject_id"])[0].reason
    assert "V4: 30 missing (NaN) samples" in _reasons(site_b.report, rows_b[2]["subject_id"])[0].reason
    assert len(site_b.subjects) == 6
    assert json.loads(site_b.report.to_json())["usable_subjects"] == 6


def test_empty_manifest_cells_mean_unlabelled_and_bad_cells_warn(tiny_cohort):
    site_dir = tiny_cohort / "hospital-a"
    rows = _rows(site_dir)
    rows[0]["LVEF"] = "sixty"
    rows[0]["CAD"] = "maybe"
    rows[1]["LVEF"] = ""
    with (site_dir / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    site = prepare_site(load_site_config(tiny_cohort / "site_configs" / "hospital-a.toml"))
    warnings = [p.reason for p in _reasons(site.report, rows[0]["subject_id"])]
    assert any("LVEF: 'sixty' is not a number" in w for w in warnings)
    assert any("CAD: 'maybe' is not 0/1" in w for w in warnings)
    subjects = {s.subject_id: s for s in site.subjects}
    assert len(subjects) == 8  # warnings never drop a subject
    assert np.isnan(subjects[rows[0]["subject_id"]].indicators[3])
    assert np.isnan(subjects[rows[1]["subject_id"]].indicators[3])


def test_cache_hits_skip_decoding_and_changes_invalidate_only_their_entries(tiny_cohort, monkeypatch):
    config_path = tiny_cohort / "site_configs" / "hospital-a.toml"
    first = prepare_site(load_site_config(config_path))
    decoded = {"ecg": 0, "cmr": 0}
    real_ecg, real_cmr = site_data.read_ecg, site_data.read_cmr

    def count(kind, real):
        def wrapper(*args, **kwargs):
            decoded[kind] += 1
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(site_data, "read_ecg", count("ecg", real_ecg))
    monkeypatch.setattr(site_data, "read_cmr", count("cmr", real_cmr))

    again = prepare_site(load_site_config(config_path))
    assert decoded == {"ecg": 0, "cmr": 0}
    assert [s.ecg_key for s in again.subjects] == [s.ecg_key for s in first.subjects]

    row = _rows(tiny_cohort / "hospital-a")[2]
    header = tiny_cohort / "hospital-a" / (row["ecg_path"] + ".hea")
    header.write_text(header.read_text() + "# edited\n")  # new bytes, same record
    prepare_site(load_site_config(config_path))
    assert decoded == {"ecg": 1, "cmr": 0}

    text = config_path.read_text().replace("window_s = 10.0", "window_s = 10.0\nhighpass_hz = 0.7")
    config_path.write_text(text)
    changed = prepare_site(load_site_config(config_path))
    assert decoded == {"ecg": 9, "cmr": 0}  # every ECG re-made, no CMR touched
    assert len(changed.subjects) == 8


def test_cached_array_equals_fresh_decode(tiny_cohort):
    config = load_site_config(tiny_cohort / "site_configs" / "hospital-b.toml")
    site = prepare_site(config)
    subject = site.subjects[0]
    row = next(r for r in _rows(tiny_cohort / "hospital-b") if r["subject_id"] == subject.subject_id)
    fresh = site_data.read_cmr(config.data_root / row["cmr_path"], config.cmr).frames
    assert np.array_equal(np.asarray(site.cmr(subject)), fresh)


runner = CliRunner()


def test_cli_data_check_json_and_exit_codes(tiny_cohort):
    config = tiny_cohort / "site_configs" / "hospital-c.toml"
    result = runner.invoke(app, ["data", "check", "--site-config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert report["usable_subjects"] == 8 and report["counts"]["paired"] == {"train": 0, "val": 0, "test": 0}

    for file in (tiny_cohort / "hospital-c").rglob("*.dat"):
        file.write_bytes(b"")
    result = runner.invoke(app, ["data", "check", "--site-config", str(config)])
    assert result.exit_code == 1
    assert "truncated signal file" in result.output and "nothing usable" in result.output


def test_cli_bad_config_names_the_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[site]\nid = "x"\ndata_root = "."\n[training]\nbatch_size = 0\n')
    result = runner.invoke(app, ["data", "check", "--site-config", str(path)])
    assert result.exit_code == 2
    assert "training.batch_size" in result.output


@pytest.mark.parametrize("command", [[], ["synth"], ["data"], ["data", "check"]])
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_the_text_report_says_each_problems_severity_and_counts_subjects_and_files_apart(tiny_cohort):
    """Before: rich swallowed the [rejected]/[warning] tags (lines began with a bare space), and "N rejected"
    counted CMR problems whose subjects were kept."""
    a = tiny_cohort / "hospital-a"
    paired = [row for row in _rows(a) if row["cmr_path"]]
    rows = [next(row for row in _rows(a) if row not in paired[:2]), *paired[:2]]
    (a / (rows[0]["ecg_path"] + ".hea")).write_text("garbage header\n")  # subject rejected
    for file in (a / rows[1]["cmr_path"]).rglob("*.dcm"):  # CMR not used; the subject stays as ECG-only
        ds = pydicom.dcmread(file)
        ds.Modality = "CT"
        ds.save_as(file)
    _rewrite_cell(a, rows[2]["subject_id"], "cmr_path", "odd[red]name/cine")  # a name rich would read as markup
    result = runner.invoke(app, ["data", "check", "--site-config", str(tiny_cohort / "site_configs" / "hospital-a.toml")])
    lines = result.output.splitlines()
    problems = [line for line in lines if line.startswith(("REJECTED:", "WARNING:"))]
    assert any(line.startswith(f"REJECTED: {rows[0]['subject_id']} ecg: malformed WFDB header") for line in problems)
    assert any(line.startswith(f"REJECTED: {rows[1]['subject_id']} cmr: format not supported") for line in problems)
    assert any("odd[red]name" in line for line in lines)  # escaped, not eaten as a colour tag
    assert "8 manifest rows: 7 subjects usable, 1 rejected" in result.output
    assert "2 CMR studies not used (those subjects kept as ECG-only)" in result.output


def _rewrite_cell(site: Path, subject: str, column: str, value: str) -> None:
    rows = _rows(site)
    for row in rows:
        if row["subject_id"] == subject:
            row[column] = value
    with (site / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_a_torn_cache_entry_is_decoded_again(tiny_cohort):
    """Cache writes skip fsync (a cache can be rebuilt); an entry a power cut left empty is a miss, not an error."""
    config = load_site_config(tiny_cohort / "site_configs" / "hospital-a.toml")
    first = prepare_site(config)
    torn = next(config.cache_dir.rglob("*.npy"))
    torn.write_bytes(b"")
    again = prepare_site(config)
    assert [s.subject_id for s in again.subjects] == [s.subject_id for s in first.subjects]
    assert all(again.ecg(s).shape == first.ecg(s).shape for s in again.subjects)
    assert torn.stat().st_size > 0  # written again


def test_reduced_lead_records_are_reported_with_the_leads_they_have(tiny_cohort):
    """The report names what a reduced-lead record holds and what is masked."""
    b = tiny_cohort / "hospital-b"
    row = _rows(b)[0]
    eight = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
    write_wfdb(b / row["ecg_path"], np.random.default_rng(2).normal(0, 0.3, (8, 10000)), 1000, eight, "16", [])
    config_path = tiny_cohort / "site_configs" / "hospital-b.toml"
    config_path.write_text(config_path.read_text().replace("allow_reduced_leads = false", "allow_reduced_leads = true"))
    report = prepare_site(load_site_config(config_path)).report
    lines = [p for p in _reasons(report, row["subject_id"]) if p.reason.startswith("reduced-lead record")]
    assert len(lines) == 1 and lines[0].severity == "warning"
    assert lines[0].reason == "reduced-lead record: has I, II, V1, V2, V3, V4, V5, V6 (8 of 12); III, aVR, aVL, aVF masked"
