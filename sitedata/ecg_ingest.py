"""WFDB ECG ingest: read a record, map its leads to the standard 12-lead order, resample to the model
rate with an anti-aliased polyphase filter, remove baseline wander, check signal quality and cut
model windows.

Output: `EcgSample` windows of shape (12, rate * window_s) in millivolts, with a lead mask saying which
rows hold a measured lead. A row whose mask is False is zero, and only ever in reduced-lead mode.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy import signal

from sitedata.site_config import EcgSettings
from shared_models.targets import LEADS

# Header spellings seen in MIMIC-IV-ECG, PTB-XL, PTB and MIT-BIH, lower-cased; MLII is a modified lead II.
_LEAD_ALIASES = {name.lower(): name for name in LEADS} | {"mlii": "II", "ml2": "II"}
_TO_MV = {"mv": 1.0, "uv": 1e-3, "μv": 1e-3, "v": 1e3, "nu": None}

# Bits per sample of WFDB's fixed-size storage formats (compressed FLAC formats are not listed).
_FORMAT_BITS = {"8": 8, "80": 8, "16": 16, "61": 16, "160": 16, "212": 12, "310": 10, "311": 10, "24": 24, "32": 32}

FLAT_PEAK_TO_PEAK_MV = 0.02  # a connected lead moves more than 20 µV over 10 s
SATURATED_FRACTION = 0.05  # more than 5 % of samples pinned at the ADC limits


class EcgError(ValueError):
    """A record that cannot give a usable ECG; the message says why."""


@dataclass
class EcgSample:
    signal: np.ndarray  # (12, T) float32, mV, standard lead order
    lead_mask: np.ndarray  # (12,) bool, True where the lead was measured and passed quality checks
    meta: dict = field(default_factory=dict)  # source rate, units, window start, flagged leads …


def read_ecg(record_path: str | Path, settings: EcgSettings) -> list[EcgSample]:
    """Read one WFDB record (path with or without `.hea`) into one or more model windows."""
    raw, fs, names, units, adc_limits = _read_wfdb(Path(record_path), settings.window_s * settings.max_windows)
    leads, lead_units, lead_limits = _map_leads(raw, names, units, adc_limits, settings)
    quality_flags: dict[str, str] = {}
    present = np.zeros(len(LEADS), dtype=bool)
    n_source = raw.shape[0]
    source = np.zeros((len(LEADS), n_source), dtype=np.float64)
    for i, lead in enumerate(LEADS):
        if leads[i] is None:
            continue
        values = _to_millivolts(leads[i], lead_units[i], lead)
        problem = _lead_problem(values, lead_limits[i])
        if problem:
            quality_flags[lead] = problem
            continue
        source[i] = values
        present[i] = True

    _check_enough_leads(present, quality_flags, settings, missing=[LEADS[i] for i in range(len(LEADS)) if leads[i] is None])

    resampled = resample(source[present], fs, settings.sampling_rate_hz)
    filtered = remove_baseline_wander(resampled, settings.sampling_rate_hz, settings.highpass_hz)
    window = int(round(settings.window_s * settings.sampling_rate_hz))
    n_windows = min(settings.max_windows, filtered.shape[1] // window)
    if n_windows == 0:
        raise EcgError(
            f"record is {n_source / fs:.1f} s long, shorter than the {settings.window_s:g} s model window"
        )
    samples = []
    for w in range(n_windows):
        out = np.zeros((len(LEADS), window), dtype=np.float32)
        out[present] = filtered[:, w * window:(w + 1) * window]
        samples.append(EcgSample(
            signal=out,
            lead_mask=present.copy(),
            meta={
                "source_rate_hz": fs,
                "source_leads": list(names),
                "window_index": w,
                "window_start_s": w * settings.window_s,
                "flagged_leads": quality_flags,
            },
        ))
    return samples


def resample(x: np.ndarray, source_hz: float, target_hz: float) -> np.ndarray:
    """Polyphase resampling along the last axis; its FIR low-pass removes content above the new Nyquist."""
    if source_hz == target_hz:
        return x.astype(np.float64, copy=True)
    ratio = Fraction(target_hz / source_hz).limit_denominator(1000)
    return signal.resample_poly(x, ratio.numerator, ratio.denominator, axis=-1)


def remove_baseline_wander(x: np.ndarray, fs: float, cutoff_hz: float) -> np.ndarray:
    """Zero-phase high-pass (2nd-order Butterworth run forward and back) so QRS/ST timing is unchanged."""
    if x.shape[-1] == 0:
        return x
    sos = signal.butter(2, cutoff_hz, btype="highpass", fs=fs, output="sos")
    return signal.sosfiltfilt(sos, x, axis=-1)


def wfdb_record_base(path: Path) -> Path:
    """The record name WFDB expects: the path without a `.hea`/`.dat` extension."""
    return path.with_suffix("") if path.suffix in (".hea", ".dat") else path


def _read_wfdb(path: Path, needed_s: float | None = None):
    import wfdb  # heavy import kept out of module import for light processes

    record_name = str(wfdb_record_base(path))
    header = Path(record_name + ".hea")
    if not header.is_file():
        raise EcgError(f"WFDB header not found: {header}")
    try:
        head = wfdb.rdheader(record_name)
    except Exception as err:  # wfdb raises bare ValueError/IndexError on malformed headers
        raise EcgError(f"malformed WFDB header {header.name}: {err}") from err
    if not head.sig_name or not head.fs:
        raise EcgError(f"malformed WFDB header {header.name}: no signals or no sampling frequency")
    _check_dat_length(head, Path(record_name).parent)
    # Only the samples the windows need are decoded: a 30-min Holter-style record costs no more than 10 s.
    sampto = None
    if head.sig_len and needed_s is not None:
        sampto = min(head.sig_len, int(math.ceil(needed_s * head.fs)))
    try:
        record = wfdb.rdrecord(record_name, physical=False, sampto=sampto)
    except Exception as err:
        raise EcgError(f"cannot read WFDB record {Path(record_name).name}: {err}") from err

    digital = record.d_signal.astype(np.float64)  # (N, C)
    gain = np.asarray(record.adc_gain, dtype=np.float64)
    baseline = np.asarray(record.baseline, dtype=np.float64)
    if np.any(gain == 0):
        raise EcgError(f"malformed WFDB header {header.name}: ADC gain of 0")
    invalid = _invalid_sample_values(record.fmt)
    physical = (digital - baseline) / gain
    for c, bad in enumerate(invalid):
        if bad is not None:
            physical[digital[:, c] == bad, c] = np.nan  # WFDB's "no sample" marker
    limits = [_adc_limits(fmt) for fmt in record.fmt]
    adc_limits = [((lo - b) / g, (hi - b) / g) for (lo, hi), g, b in zip(limits, gain, baseline)]
    return physical, float(record.fs), list(record.sig_name), list(record.units), adc_limits


def _check_dat_length(head, folder: Path) -> None:
    """A truncated .dat would otherwise be read short or padded silently; compare bytes to the header."""
    per_file: dict[str, float] = {}
    for fname, fmt in zip(head.file_name, head.fmt):
        if fmt not in _FORMAT_BITS:
            return  # compressed (FLAC) formats have no fixed size; wfdb checks those itself
        per_file[fname] = per_file.get(fname, 0) + _FORMAT_BITS[fmt]
    for fname, bits_per_frame in per_file.items():
        dat = folder / fname
        if not dat.is_file():
            raise EcgError(f"WFDB signal file missing: {dat.name}")
        if head.sig_len is None:
            continue
        expected = math.ceil(head.sig_len * bits_per_frame / 8)
        actual = os.path.getsize(dat)
        if actual < expected:
            raise EcgError(
                f"truncated signal file {dat.name}: header promises {head.sig_len} samples "
                f"({expected} bytes), file has {actual} bytes"
            )


def _adc_limits(fmt: str) -> tuple[int, int]:
    bits = _FORMAT_BITS.get(fmt, 16)
    return -(2 ** (bits - 1)) + 1, 2 ** (bits - 1) - 1


def _invalid_sample_values(fmts) -> list[int | None]:
    # WFDB reserves the most negative code of each format for "sample missing"; format 8 stores
    # first differences, where no code means that.
    return [-(2 ** (_FORMAT_BITS[f] - 1)) if f in _FORMAT_BITS and f != "8" else None for f in fmts]


def _map_leads(raw, names, units, adc_limits, settings: EcgSettings):
    """Place each recorded lead in its standard row; extra leads (Frank vx/vy/vz, …) are dropped."""
    leads: list[np.ndarray | None] = [None] * len(LEADS)
    lead_units: list[str] = [""] * len(LEADS)
    lead_limits: list[tuple[float, float] | None] = [None] * len(LEADS)
    for column, name in enumerate(names):
        standard = _LEAD_ALIASES.get(name.strip().lower())
        if standard is None:
            continue
        row = LEADS.index(standard)
        if leads[row] is not None:
            raise EcgError(f"lead {standard} appears twice (as {name!r})")
        leads[row] = raw[:, column]
        lead_units[row] = units[column]
        lead_limits[row] = adc_limits[column]
    missing = [LEADS[i] for i in range(len(LEADS)) if leads[i] is None]
    if missing and not settings.allow_reduced_leads:
        found = len(LEADS) - len(missing)
        raise EcgError(
            f"{found} of 12 standard leads present (record has {', '.join(names)}); "
            f"missing {', '.join(missing)} (the site config does not allow reduced-lead input)"
        )
    return leads, lead_units, lead_limits


def _to_millivolts(values: np.ndarray, unit: str, lead: str = "") -> np.ndarray:
    scale = _TO_MV.get((unit or "mV").strip().lower())
    if scale is None:
        raise EcgError(f"lead {lead}: unknown unit {unit!r} (expected mV, uV or V)")
    return values * scale


def _lead_problem(values: np.ndarray, limits: tuple[float, float] | None) -> str | None:
    if np.isnan(values).any():
        return f"{int(np.isnan(values).sum())} missing (NaN) samples"
    if np.ptp(values) < FLAT_PEAK_TO_PEAK_MV:
        return "flat line (lead off?)"
    if limits is not None:
        lo, hi = limits
        pinned = np.mean((values <= lo) | (values >= hi))
        if pinned > SATURATED_FRACTION:
            return f"saturated ({pinned:.0%} of samples at the ADC limit)"
    return None


def _check_enough_leads(present: np.ndarray, flags: dict[str, str], settings: EcgSettings, missing: list[str]) -> None:
    usable = int(present.sum())
    if settings.allow_reduced_leads:
        if usable >= settings.min_leads:
            return
        needed = f"at least {settings.min_leads} usable leads"
    elif usable == len(LEADS):
        return
    else:
        needed = "all 12 leads usable"
    problems = [f"{lead}: {why}" for lead, why in flags.items()] + [f"{lead}: missing" for lead in missing]
    raise EcgError(f"{usable} of 12 leads usable, site requires {needed} ({'; '.join(problems)})")
