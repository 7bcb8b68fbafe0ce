"""WFDB ingest on real PhysioNet records and on records written to exercise each rule."""

import numpy as np
import pytest

from sitedata.ecg_ingest import EcgError, read_ecg, remove_baseline_wander, resample
from sitedata.site_config import EcgSettings
from shared_models.targets import LEADS
from synthetic.writers import write_wfdb


def test_ptb_record_gives_twelve_standard_leads_at_model_rate(physionet):
    import wfdb

    windows = read_ecg(physionet / "s0010_re", EcgSettings(max_windows=5))
    assert len(windows) == 3  # 38.4 s -> three full 10 s windows
    first = windows[0]
    assert first.signal.shape == (12, 5000) and first.signal.dtype == np.float32
    assert first.lead_mask.all()
    # Row order is the standard one: row "V1" equals the record's 'v1' after the same processing.
    raw = wfdb.rdrecord(str(physionet / "s0010_re"), channel_names=["v1"]).p_signal[:10000, 0]
    expected = remove_baseline_wander(resample(raw[None], 1000, 500), 500, 0.5)[0, :5000]
    assert np.allclose(first.signal[LEADS.index("V1")][:4000], expected[:4000], atol=0.01)  # end: filter edge
    assert "vx" in first.meta["source_leads"]  # Frank leads were present and dropped


def test_mitbih_two_lead_record_is_refused_naming_missing_leads(physionet):
    with pytest.raises(EcgError, match=r"2 of 12") as err:
        read_ecg(physionet / "100", EcgSettings())
    assert "aVR" in str(err.value) and "V1" in str(err.value)


def test_mitbih_accepted_with_lead_mask_when_reduced_leads_allowed(physionet):
    windows = read_ecg(physionet / "100", EcgSettings(allow_reduced_leads=True, min_leads=2, max_windows=2))
    assert len(windows) == 2
    mask = windows[0].lead_mask
    assert [LEADS[i] for i in np.flatnonzero(mask)] == ["II", "V5"]  # MLII is (modified) lead II
    assert np.all(windows[0].signal[~mask] == 0) and windows[0].signal[mask].std() > 0.05
    assert windows[0].meta["source_rate_hz"] == 360


def test_resampler_is_anti_aliased():
    fs = 1000
    t = np.arange(10 * fs) / fs
    low = resample(np.sin(2 * np.pi * 10 * t)[None], fs, 250)[0]
    high = resample(np.sin(2 * np.pi * 200 * t)[None], fs, 250)[0]  # above the new Nyquist (125 Hz)
    assert len(low) == 2500
    assert np.std(low[100:-100]) == pytest.approx(np.sqrt(0.5), rel=0.02)
    assert np.std(high[100:-100]) < 0.01  # folded back at < -40 dB, not as a 50 Hz alias


def test_baseline_wander_removed_and_qrs_band_kept():
    fs = 500
    t = np.arange(10 * fs) / fs
    wander = np.sin(2 * np.pi * 0.1 * t)
    qrs_band = 0.2 * np.sin(2 * np.pi * 15 * t)
    out = remove_baseline_wander((wander + qrs_band)[None], fs, 0.5)[0]
    assert np.abs(out - qrs_band)[500:-500].max() < 0.03


def _write(tmp_path, name, signal_mv, names, fs=500, fmt="16"):
    write_wfdb(tmp_path / name, signal_mv, fs, names, fmt, ["synthetic: true"])
    return tmp_path / name


def _ecg(n_leads, seconds=10, fs=500, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(seconds * fs) / fs
    return np.stack([0.5 * np.sin(2 * np.pi * (1 + i) * t) + 0.01 * rng.normal(size=t.size) for i in range(n_leads)])


def test_lead_names_mapped_case_insensitively_and_reordered(tmp_path):
    names = ["V6", "avl", "I", "II", "III", "AVR", "aVF", "v1", "V2", "V3", "V4", "V5"]
    data = _ecg(12)
    windows = read_ecg(_write(tmp_path, "shuffled", data, names), EcgSettings())
    out = windows[0].signal
    for column, name in enumerate(names):
        row = [lead.lower() for lead in LEADS].index(name.lower())
        expected = remove_baseline_wander(data[column][None], 500, 0.5)[0]
        assert np.allclose(out[row], expected, atol=2e-3), name


def test_microvolt_units_converted_to_millivolts(tmp_path):
    import wfdb

    data = _ecg(12) * 1000  # µV
    wfdb.wrsamp("uv", fs=500, units=["uV"] * 12, sig_name=list(LEADS), p_signal=data.T, fmt=["16"] * 12,
                adc_gain=[1.0] * 12, baseline=[0] * 12, write_dir=str(tmp_path))
    out = read_ecg(tmp_path / "uv", EcgSettings())[0].signal
    assert 0.2 < out[0].std() < 0.5


def test_truncated_dat_is_reported(tmp_path):
    path = _write(tmp_path, "trunc", _ecg(12), list(LEADS))
    dat = path.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[:5000])
    with pytest.raises(EcgError, match="truncated signal file trunc.dat"):
        read_ecg(path, EcgSettings())


def test_malformed_header_is_reported(tmp_path):
    path = _write(tmp_path, "bad", _ecg(12), list(LEADS))
    path.with_suffix(".hea").write_text("bad 12 five-hundred\nnonsense line\n")
    with pytest.raises(EcgError, match="malformed WFDB header bad.hea"):
        read_ecg(path, EcgSettings())


def test_missing_header_is_reported(tmp_path):
    with pytest.raises(EcgError, match="header not found"):
        read_ecg(tmp_path / "nothing", EcgSettings())


def test_nan_and_flat_leads_name_the_lead(tmp_path):
    data = _ecg(12)
    data[3, 100:200] = np.nan  # aVR has a gap (written as WFDB's missing-sample code)
    data[7] = 0.0  # V2 flat
    with pytest.raises(EcgError) as err:
        read_ecg(_write(tmp_path, "gaps", data, list(LEADS)), EcgSettings())
    message = str(err.value)
    assert "aVR: 100 missing (NaN) samples" in message and "V2: flat line" in message
    windows = read_ecg(tmp_path / "gaps", EcgSettings(allow_reduced_leads=True, min_leads=8))
    assert not windows[0].lead_mask[3] and not windows[0].lead_mask[7] and windows[0].lead_mask.sum() == 10
    assert set(windows[0].meta["flagged_leads"]) == {"aVR", "V2"}


def test_saturated_lead_is_flagged(tmp_path):
    data = _ecg(12)
    data[0] = np.clip(data[0] * 100, -32.767, 32.767)  # pinned at the 16-bit ADC limits (gain 1000)
    with pytest.raises(EcgError, match="I: saturated"):
        read_ecg(_write(tmp_path, "sat", data, list(LEADS)), EcgSettings())


def test_record_shorter_than_window_is_refused(tmp_path):
    with pytest.raises(EcgError, match="shorter than the 10 s model window"):
        read_ecg(_write(tmp_path, "short", _ecg(12, seconds=8), list(LEADS)), EcgSettings())


def test_format_212_and_250_hz_record(tmp_path):
    windows = read_ecg(_write(tmp_path, "f212", _ecg(12, fs=250), list(LEADS), fs=250, fmt="212"), EcgSettings())
    assert windows[0].signal.shape == (12, 5000)
    # the 5 Hz test tone on aVL survives the 250 -> 500 Hz resampling with its amplitude
    assert np.std(windows[0].signal[4, 500:-500]) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)
