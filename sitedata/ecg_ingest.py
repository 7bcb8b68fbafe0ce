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

# Bits per sample of WFDB's fixed-size storage formats (their files have a size the header predicts).
_FORMAT_BITS = {"8": 8, "80": 8, "16": 16, "61": 16, "160": 16, "212": 12, "310": 10, "311": 10, "24": 24, "32": 32}
# ... and of every format, the FLAC-compressed 508/516/524 too (for the ADC range and the missing-sample code).
_SAMPLE_BITS = _FORMAT_BITS | {"508": 8, "516": 16, "524": 24}
MAX_ABS_MV = 25.0  # no lead of a surface ECG moves this far from its median

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
    """Read one WFDB record (path with or without `.hea`) into one or more model windows. Signal quality is
    judged per window: a lead that is flat, saturated, missing samples or out of range in one window is masked
    in that window only, and a window left with too few leads is dropped (both noted in the metadata)."""
    raw, fs, names, units, adc_limits = _read_wfdb(Path(record_path), settings.window_s * settings.max_windows)
    leads, lead_units, lead_limits = _map_leads(raw, names, units, adc_limits, settings)
    missing = [LEADS[i] for i in range(len(LEADS)) if leads[i] is None]
    n_source = raw.shape[0]
    source_window = int(round(settings.window_s * fs))
    n_windows = min(settings.max_windows, n_source // source_window) if source_window else 0
    if n_windows == 0:
        raise EcgError(f"record is {n_source / fs:.1f} s long, shorter than the {settings.window_s:g} s model window")

    source = np.zeros((len(LEADS), n_windows * source_window), dtype=np.float64)
    masks = np.zeros((n_windows, len(LEADS)), dtype=bool)
    window_flags: list[dict[str, str]] = [{} for _ in range(n_windows)]  # per window: lead -> why it is masked
    for i, lead in enumerate(LEADS):
        if leads[i] is None:
            continue
        values = _to_millivolts(leads[i][:n_windows * source_window], lead_units[i], lead)
        for w in range(n_windows):
            part = values[w * source_window:(w + 1) * source_window]
            problem = _lead_problem(part, lead_limits[i])
            if problem:
                window_flags[w][lead] = problem
                continue  # left at zero: garbage must not ring through the filters into its neighbours
            source[i, w * source_window:(w + 1) * source_window] = part
            masks[w, i] = True

    kept, dropped = [], {}
    for w in range(n_windows):
        try:
            _check_enough_leads(masks[w], window_flags[w], settings, missing)
            kept.append(w)
        except EcgError as err:
            if n_windows == 1:
                raise
            dropped[w + 1] = str(err)
    if not kept:
        raise EcgError(f"no window of the record is usable: {'; '.join(f'window {w}: {why}' for w, why in dropped.items())}")

    flags = {lead if n_windows == 1 else f"{lead} (window {w + 1})": why  # for the report
             for w, flagged in enumerate(window_flags) for lead, why in flagged.items()}
    present = masks.any(axis=0)
    resampled = resample(source[present], fs, settings.sampling_rate_hz)
    filtered = remove_baseline_wander(resampled, settings.sampling_rate_hz, settings.highpass_hz)
    window = int(round(settings.window_s * settings.sampling_rate_hz))
    samples = []
    for w in kept:
        out = np.zeros((len(LEADS), window), dtype=np.float32)
        out[present] = filtered[:, w * window:(w + 1) * window]
        out[~masks[w]] = 0.0
        samples.append(EcgSample(
            signal=out,
            lead_mask=masks[w].copy(),
            meta={
                "source_rate_hz": fs,
                "source_leads": list(names),
                "window_index": w,
                "window_start_s": w * settings.window_s,
                "flagged_leads": flags,
                "dropped_windows": dropped,
                "missing_leads": missing,
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
    # wfdb parses a header in ~20 ms (pandas per field); its record line and formats are read here instead, so
    # that each record's header is parsed by wfdb once (in rdrecord), not twice.
    segments, fs, sig_len, frames_per_sample = _header_summary(header)
    # Only the samples the windows need are decoded: a 30-min Holter-style record costs no more than 10 s.
    sampto = min(sig_len, int(math.ceil(needed_s * fs))) if sig_len and needed_s is not None else None
    if segments:
        return _read_multi_segment(record_name, header, sampto)
    if not frames_per_sample:
        raise EcgError(f"malformed WFDB header {header.name}: no signals")
    try:
        # Signals stored with several samples per frame are read at their own rate (wfdb would average them).
        record = wfdb.rdrecord(record_name, physical=False, sampto=sampto, smooth_frames=max(frames_per_sample) == 1)
    except Exception as err:
        try:  # the precise reason where there is one (a malformed header, a missing or truncated file)
            head = wfdb.rdheader(record_name)
        except Exception as header_err:  # wfdb raises bare ValueError/IndexError on malformed headers
            raise EcgError(f"malformed WFDB header {header.name}: {header_err}") from header_err
        _check_dat_length(head, Path(record_name).parent)
        raise EcgError(f"cannot read WFDB record {Path(record_name).name}: {err}") from err
    _check_dat_length(record, Path(record_name).parent)

    fs = float(record.fs)
    if max(frames_per_sample) > 1:
        digital, fs = _expanded_to_one_rate(record.e_d_signal, frames_per_sample, fs)
    else:
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
    return physical, fs, list(record.sig_name), list(record.units), adc_limits


def _header_summary(header: Path) -> tuple[int, float, int | None, list[int]]:
    """(segments (0: a single-segment record), frame rate, samples, samples per frame of each signal) from the
    record line and signal lines (WFDB header format); EcgError naming the header when they are malformed."""
    lines = [line.split() for line in header.read_text(errors="replace").splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    try:
        record = lines[0]
        segments = int(record[0].split("/")[1]) if "/" in record[0] else 0
        n_signals = int(record[1])
        fs = float(record[2].split("/")[0].split("(")[0]) if len(record) > 2 else 250.0
        sig_len = int(record[3]) if len(record) > 3 else None
        per_frame = [] if segments else [int(line[1].split("x")[1].split(":")[0].split("+")[0]) if "x" in line[1] else 1
                                         for line in lines[1:1 + n_signals]]
    except (IndexError, ValueError) as err:
        raise EcgError(f"malformed WFDB header {header.name}: cannot read its record or signal lines ({err})") from err
    if fs <= 0:
        raise EcgError(f"malformed WFDB header {header.name}: no sampling frequency")
    if not segments and len(per_frame) != n_signals:
        raise EcgError(f"malformed WFDB header {header.name}: {n_signals} signals announced, {len(per_frame)} described")
    return segments, fs, sig_len, per_frame


def _expanded_to_one_rate(expanded: list[np.ndarray], frames_per_sample: list[int], frame_rate: float):
    """Per-signal samples at (frame rate x samples per frame) -> one (N, C) array at the highest of those rates
    (a signal with fewer samples per frame is upsampled by a polyphase filter)."""
    top = max(frames_per_sample)
    columns = []
    for values, per_frame in zip(expanded, frames_per_sample):
        values = np.asarray(values, dtype=np.float64)
        ratio = Fraction(top, per_frame)
        columns.append(values if per_frame == top else signal.resample_poly(values, ratio.numerator, ratio.denominator))
    length = min(len(c) for c in columns)
    return np.stack([c[:length] for c in columns], axis=1), frame_rate * top


def _read_multi_segment(record_name: str, header: Path, sampto: int | None):
    """A multi-segment record (fixed or variable layout, as in MIMIC waveform data), joined into one by wfdb;
    gaps between segments and signals absent from a segment read as missing (NaN). Physical units come from
    each segment's own header, so no single ADC range applies."""
    import wfdb

    try:
        record = wfdb.rdrecord(record_name, physical=True, m2s=True, sampto=sampto)
    except Exception as err:
        raise EcgError(f"cannot read multi-segment WFDB record {header.name}: {err}") from err
    if record.p_signal is None or not record.sig_name:
        raise EcgError(f"multi-segment WFDB record {header.name}: no signals")
    physical = np.asarray(record.p_signal, dtype=np.float64)
    return physical, float(record.fs), list(record.sig_name), list(record.units), [None] * physical.shape[1]


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
    bits = _SAMPLE_BITS.get(fmt, 16)
    return -(2 ** (bits - 1)) + 1, 2 ** (bits - 1) - 1


def _invalid_sample_values(fmts) -> list[int | None]:
    # WFDB reserves the most negative code of each format for "sample missing"; format 8 stores
    # first differences, where no code means that.
    return [-(2 ** (_SAMPLE_BITS[f] - 1)) if f in _SAMPLE_BITS and f != "8" else None for f in fmts]


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
    """Why these samples of one lead (one window) are unusable, or None."""
    if np.isnan(values).any():
        return f"{int(np.isnan(values).sum())} missing (NaN) samples"
    if np.ptp(values) < FLAT_PEAK_TO_PEAK_MV:
        return "flat line (lead off?)"
    if limits is not None:
        lo, hi = limits
        pinned = np.mean((values <= lo) | (values >= hi))
        if pinned > SATURATED_FRACTION:
            return f"saturated ({pinned:.0%} of samples at the ADC limit)"
    excursion = float(np.abs(values - np.median(values)).max())
    if excursion > MAX_ABS_MV:
        return f"implausible amplitude ({excursion:.0f} mV from its median; a surface ECG stays within {MAX_ABS_MV:g})"
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
