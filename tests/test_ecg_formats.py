"""WFDB records as hospitals and PhysioNet store them, written here with wfdb: multi-segment records, the
FLAC-compressed formats, several samples per frame, and a window of garbage inside an otherwise good record."""

from pathlib import Path

import numpy as np
import pytest
import wfdb

from sitedata.ecg_ingest import EcgError, read_ecg
from sitedata.site_config import EcgSettings
from shared_models.targets import LEADS

FS = 500


def _ecg(seconds: float, fs: int = FS, seed: int = 0) -> np.ndarray:
    """(N, 12) mV: a 1.2 Hz 'heartbeat' plus a little noise, different per lead."""
    t = np.arange(int(seconds * fs)) / fs
    rng = np.random.default_rng(seed)
    return np.stack([0.8 * np.sin(2 * np.pi * 1.2 * t + i) + 0.02 * rng.standard_normal(len(t)) for i in range(12)], axis=1)


def _write(folder: Path, name: str, mv: np.ndarray, fmt: str = "16", fs: int = FS) -> Path:
    gain = 200.0
    digital = np.round(mv * gain).astype(np.int64)
    wfdb.wrsamp(name, fs=fs, units=["mV"] * 12, sig_name=list(LEADS), d_signal=digital, fmt=[fmt] * 12,
                adc_gain=[gain] * 12, baseline=[0] * 12, write_dir=str(folder))
    return folder / name


@pytest.mark.parametrize("layout", ["fixed", "variable"])
def test_multi_segment_records_are_read_joined(tmp_path, layout):
    """Before: "malformed WFDB header" (MIMIC's waveform records are multi-segment)."""
    whole = _ecg(12.0)
    _write(tmp_path, "seg_1", whole[:3000])
    _write(tmp_path, "seg_2", whole[3000:])
    segments = ["seg_1 3000", "seg_2 3000"]
    if layout == "variable":  # a layout header names every signal; each segment holds its own
        (tmp_path / "seg_0.hea").write_text("seg_0 12 500 0\n" + "".join(f"~ 16 200/mV 16 0 0 0 0 {lead}\n" for lead in LEADS))
        segments = ["seg_0 0", *segments]
    (tmp_path / "multi.hea").write_text(f"multi/{len(segments)} 12 500 6000\n" + "\n".join(segments) + "\n")
    joined = read_ecg(tmp_path / "multi", EcgSettings(highpass_hz=0.5))
    (tmp_path / "single").mkdir()
    single = read_ecg(_write(tmp_path / "single", "single", whole), EcgSettings(highpass_hz=0.5))
    assert joined[0].lead_mask.all()
    np.testing.assert_allclose(joined[0].signal, single[0].signal, atol=1e-3)


def test_flac_formats_know_their_missing_sample_code(tmp_path):
    """Before: the gap counted as ADC saturation in format 516 (its missing-sample code was not known)."""
    mv = _ecg(10.0)
    path = _write(tmp_path, "flac", mv, fmt="516")
    record = wfdb.rdrecord(str(path), physical=False)
    digital = record.d_signal.copy()
    digital[1000:1030, LEADS.index("V4")] = -32768  # WFDB's "no sample" code of a 16-bit format
    wfdb.wrsamp("flac", fs=FS, units=["mV"] * 12, sig_name=list(LEADS), d_signal=digital, fmt=["516"] * 12,
                adc_gain=[200.0] * 12, baseline=[0] * 12, write_dir=str(tmp_path))
    with pytest.raises(EcgError, match="V4: 30 missing \\(NaN\\) samples"):
        read_ecg(path, EcgSettings())


def test_quality_is_judged_per_window(tmp_path):
    """Before: ±127 mV garbage over 3 % of a 2-window record passed (under the record-level 5 % threshold)."""
    mv = _ecg(20.0)
    mv[7500:7800, LEADS.index("V1")] = 127.0 * np.sign(np.sin(np.arange(300)))  # 6 % of window 2
    windows = read_ecg(_write(tmp_path, "garbage", mv), EcgSettings(max_windows=2))
    assert [w.meta["window_index"] for w in windows] == [0]  # window 2 lost V1, and the site needs all 12 leads
    assert "implausible amplitude" in windows[0].meta["flagged_leads"]["V1 (window 2)"]
    assert "window" not in str(windows[0].meta["flagged_leads"].keys() - {"V1 (window 2)"})
    reduced = read_ecg(tmp_path / "garbage", EcgSettings(max_windows=2, allow_reduced_leads=True))
    assert len(reduced) == 2 and not reduced[1].lead_mask[LEADS.index("V1")] and reduced[0].lead_mask.all()
    assert np.all(reduced[1].signal[LEADS.index("V1")] == 0)


def test_several_samples_per_frame_are_read_at_the_signals_own_rate(tmp_path):
    """Before: wfdb averaged the 4 samples of each frame, so a 500 Hz ECG became 125 Hz."""
    t = np.arange(5000) / 500.0
    tone = np.stack([0.5 * np.sin(2 * np.pi * 40 * t + i) for i in range(12)], axis=1)  # 40 Hz: lost at 125 Hz
    digital = [np.round(tone[:, i] * 200).astype(np.int64) for i in range(12)]
    wfdb.wrsamp("spf", fs=125, units=["mV"] * 12, sig_name=list(LEADS), e_d_signal=digital, samps_per_frame=[4] * 12,
                fmt=["16"] * 12, adc_gain=[200.0] * 12, baseline=[0] * 12, write_dir=str(tmp_path))
    window = read_ecg(tmp_path / "spf", EcgSettings(highpass_hz=0.5))[0]
    assert window.meta["source_rate_hz"] == 500.0
    middle = window.signal[0, 1000:4000]
    assert np.ptp(middle) > 0.8  # the 40 Hz tone survives (averaging 4 samples would have flattened it)
