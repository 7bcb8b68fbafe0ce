"""Site configuration (`site_configs/<site>.toml`): who the site is, where its data lives, how it is
preprocessed and what privacy budget it grants.

Every validation error names the file, the dotted key and what was expected, so hospital IT can fix a
config without reading code. Unknown keys are errors too: a typo must not silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared_models.targets import LEADS

MODALITIES = ("ecg", "cmr")
DEVICES = ("auto", "cpu", "cuda")


class SiteConfigError(ValueError):
    """A site config that cannot be used; the message names file, key and the expectation."""


@dataclass(frozen=True)
class EcgSettings:
    sampling_rate_hz: int = 500  # model rate; every record is resampled to it
    window_s: float = 10.0  # model input length
    max_windows: int = 1  # longer records give up to this many non-overlapping windows
    highpass_hz: float = 0.5  # baseline-wander removal cut-off
    allow_reduced_leads: bool = False  # accept records missing some of the 12 leads (a lead mask is kept)
    min_leads: int = 2  # with reduced leads allowed: fewest usable leads a record may have


AUTO_ROI = "auto"


@dataclass(frozen=True)
class CmrSettings:
    image_size: int = 64  # output frames are image_size x image_size pixels
    frames: int = 16  # output frames per cardiac cycle
    pixel_spacing_mm: float = 2.0  # in-plane spacing after resampling (64 px x 2 mm = 128 mm field of view)
    series_description: str = ""  # regex picking the cine short-axis series; empty: automatic
    slice_position: float = 0.5  # which short-axis slice, as a fraction of the stack ordered by SliceLocation (0.5: mid-ventricular)
    # "auto": around the LV found from the cine's own motion (sitedata/heart_localisation.py);
    # (row, col) fractions of the image; None: the image centre
    roi_center: tuple[float, float] | str | None = "auto"
    min_source_frames: int = 10  # fewest time frames a cine may have (fewer would be interpolated into the model's frames)
    max_frame_interval_ms: float = 100.0  # a longer interval between frames is reported as low temporal resolution


@dataclass(frozen=True)
class PrivacySettings:
    target_epsilon: float = 8.0  # lifetime budget of this site, over every round, phase and restart
    target_delta: float = 1e-5  # must stay below 1 / (number of training samples)
    max_grad_norm: float = 1.0  # per-sample gradient clipping bound
    required: bool = True  # train only under DP; a round that asks for less privacy is declined
    ledger_copy: str = ".cardiacfl-ledger-copy/privacy_ledger.json"  # second ledger copy (relative to data_root)
    min_eval_count: int = 20  # per-site validation metrics only with at least this many positives and negatives
    # A DP round's training loss leaves only noised (client/loss_release.py): each patient's loss clipped to
    # [0, loss_bound], their sum plus N(0, (loss_noise_multiplier x loss_bound)^2), its ε in the ledger.
    # 0: the loss never leaves.
    loss_noise_multiplier: float = 0.0
    loss_bound: float = 5.0


@dataclass(frozen=True)
class TrainingSettings:
    batch_size: int = 32
    max_local_epochs: int = 5  # the most local epochs a round may ask of this site; more is declined
    device: str = "auto"  # auto: CUDA when present, else CPU


@dataclass(frozen=True)
class SiteConfig:
    path: Path  # the TOML file this came from
    site_id: str
    data_root: Path  # absolute; relative paths in the file are resolved against the file's folder
    manifest: Path  # absolute
    cache_dir: Path  # absolute
    modalities: tuple[str, ...]
    ecg: EcgSettings = field(default_factory=EcgSettings)
    cmr: CmrSettings = field(default_factory=CmrSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)

    state_root: Path | None = None  # from `site.state_dir` or $CARDIACFL_STATE_DIR/<site>; None: inside data_root

    @property
    def state_dir(self) -> Path:
        """Site state that must outlive caches and runs (the privacy ledger); never deleted by the software."""
        return self.state_root or self.data_root / ".cardiacfl-state"

    @property
    def ledger_path(self) -> Path:
        return self.state_dir / "privacy_ledger.json"

    @property
    def ledger_copy_path(self) -> Path:
        """The second copy: relative to data_root, or (with a state folder apart from read-only data) to it."""
        return ((self.state_root or self.data_root) / self.privacy.ledger_copy).resolve()


def read_toml(path: Path, error: type[ValueError], what: str) -> dict:
    """The parsed file, or `error` naming the file: missing, or not valid TOML."""
    if not path.is_file():
        raise error(f"{path}: {what} file not found")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise error(f"{path}: not valid TOML: {err}") from err


def load_site_config(path: str | Path) -> SiteConfig:
    """Read and validate one site config file."""
    path = Path(path)
    return parse_site_config(read_toml(path, SiteConfigError, "site config"), path)


def parse_site_config(raw: dict[str, Any], path: Path) -> SiteConfig:
    check = _Checker(path)
    check.known_keys(raw, "", {"site", "ecg", "cmr", "privacy", "training"})
    site = check.table(raw, "site", required=True)
    check.known_keys(site, "site", {"id", "data_root", "manifest", "modalities", "cache_dir", "state_dir"})

    site_id = check.value(site, "site.id", str, required=True)
    if not site_id or not all(c.isalnum() or c in "-_" for c in site_id):
        check.fail("site.id", "a non-empty name of letters, digits, '-' or '_'", site_id)
    base = path.parent.resolve()
    data_root = (base / check.value(site, "site.data_root", str, required=True)).resolve()
    manifest = data_root / check.value(site, "site.manifest", str, default="manifest.csv")
    # Data may be mounted read-only (a container): the state (ledger, worker socket, logs) and the cache then live
    # in `site.state_dir`, or under $CARDIACFL_STATE_DIR/<site id> when the config does not name one.
    state_value = check.value(site, "site.state_dir", str, default="")
    from_env = os.environ.get("CARDIACFL_STATE_DIR", "")
    state_root = (base / state_value).resolve() if state_value else (Path(from_env) / site_id).resolve() if from_env else None
    cache_dir = (state_root or data_root) / check.value(site, "site.cache_dir", str, default=".cache")
    modalities = tuple(check.value(site, "site.modalities", list, default=["ecg", "cmr"]))
    if "ecg" not in modalities or not set(modalities) <= set(MODALITIES):
        check.fail("site.modalities", "a list containing 'ecg' and optionally 'cmr'", modalities)

    ecg = check.section(raw, "ecg", EcgSettings)
    cmr = check.section(raw, "cmr", CmrSettings)
    privacy = check.section(raw, "privacy", PrivacySettings)
    training = check.section(raw, "training", TrainingSettings)

    for key, value in [
        ("ecg.sampling_rate_hz", ecg.sampling_rate_hz), ("ecg.max_windows", ecg.max_windows),
        ("cmr.image_size", cmr.image_size), ("cmr.frames", cmr.frames),
        ("training.batch_size", training.batch_size), ("training.max_local_epochs", training.max_local_epochs),
        ("privacy.min_eval_count", privacy.min_eval_count),
    ]:
        if value < 1:
            check.fail(key, "a positive integer", value)
    for key, value in [
        ("ecg.window_s", ecg.window_s), ("cmr.pixel_spacing_mm", cmr.pixel_spacing_mm),
        ("privacy.target_epsilon", privacy.target_epsilon), ("privacy.max_grad_norm", privacy.max_grad_norm),
        ("privacy.loss_bound", privacy.loss_bound),
    ]:
        if value <= 0:
            check.fail(key, "a positive number", value)
    if privacy.loss_noise_multiplier < 0:
        check.fail("privacy.loss_noise_multiplier", "0 (the loss never leaves) or a positive number", privacy.loss_noise_multiplier)
    if not 0 < ecg.highpass_hz < ecg.sampling_rate_hz / 2:
        check.fail("ecg.highpass_hz", f"a number between 0 and {ecg.sampling_rate_hz / 2} (Nyquist)", ecg.highpass_hz)
    if not 1 <= ecg.min_leads <= len(LEADS):
        check.fail("ecg.min_leads", f"an integer from 1 to {len(LEADS)}", ecg.min_leads)
    if not 0 <= cmr.slice_position <= 1:
        check.fail("cmr.slice_position", "a fraction between 0 and 1", cmr.slice_position)
    if not 0 < privacy.target_delta < 1:
        check.fail("privacy.target_delta", "a number between 0 and 1 (exclusive)", privacy.target_delta)
    if training.device not in DEVICES:
        check.fail("training.device", f"one of {', '.join(DEVICES)}", training.device)
    if cmr.roi_center in ("center", "centre"):  # TOML has no null: the image centre by name
        cmr = dataclasses.replace(cmr, roi_center=None)
    elif cmr.roi_center is not None and cmr.roi_center != AUTO_ROI:
        if isinstance(cmr.roi_center, str):
            check.fail("cmr.roi_center", f'"{AUTO_ROI}", "centre" or two fractions [row, col] between 0 and 1',
                       cmr.roi_center)
        roi = tuple(cmr.roi_center)
        if len(roi) != 2 or not all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in roi):
            check.fail("cmr.roi_center", "two fractions [row, col] between 0 and 1", cmr.roi_center)
        cmr = dataclasses.replace(cmr, roi_center=(float(roi[0]), float(roi[1])))

    return SiteConfig(
        path=path, site_id=site_id, data_root=data_root, manifest=manifest, cache_dir=cache_dir,
        modalities=modalities, ecg=ecg, cmr=cmr, privacy=privacy, training=training, state_root=state_root,
    )


class _Checker:
    """Type checks that turn a wrong value into an error naming file, key and expectation."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, expected: str, got: Any) -> None:
        raise SiteConfigError(f"{self.path}: key '{key}': expected {expected}, got {got!r}")

    def known_keys(self, table: dict, prefix: str, allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                dotted = f"{prefix}.{key}" if prefix else key
                raise SiteConfigError(
                    f"{self.path}: unknown key '{dotted}' (expected one of: {', '.join(sorted(allowed))})"
                )

    def table(self, raw: dict, key: str, required: bool = False) -> dict:
        if key not in raw:
            if required:
                raise SiteConfigError(f"{self.path}: missing table '[{key}]'")
            return {}
        if not isinstance(raw[key], dict):
            self.fail(key, "a table", raw[key])
        return raw[key]

    def value(self, table: dict, dotted: str, kind: type, required: bool = False, default: Any = None) -> Any:
        key = dotted.rsplit(".", 1)[-1]
        if key not in table:
            if required:
                raise SiteConfigError(f"{self.path}: missing key '{dotted}'")
            return default
        return self._typed(dotted, table[key], kind)

    def _typed(self, dotted: str, value: Any, kind: Any) -> Any:
        # TOML integers are fine where a float is expected; booleans are never numbers here.
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if kind in (int, float) and isinstance(value, bool):
            self.fail(dotted, "a number", value)
        if kind is tuple or kind is list:
            if not isinstance(value, list):
                self.fail(dotted, "a list", value)
            return value
        if not isinstance(value, kind):
            self.fail(dotted, {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(kind, str(kind)), value)
        return value

    def section(self, raw: dict, name: str, cls: type) -> Any:
        table = self.table(raw, name)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        self.known_keys(table, name, set(fields))
        values = {}
        for key, value in table.items():
            kind = fields[key].type
            base = {"int": int, "float": float, "str": str, "bool": bool}.get(kind, list)
            if value is None:
                continue
            values[key] = self._typed(f"{name}.{key}", value, base)
        return cls(**values)
