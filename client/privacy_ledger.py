"""A site's lifetime privacy ledger, kept on the site's disk: the RDP accountant's history over every round,
phase, study and restart, so the ε a site reports is always the total it has spent.

- The noise multiplier σ is fixed once, for the site's whole plan (every phase's sample rate x steps) so
  that the plan ends at the target ε; `make_private_with_epsilon` per round would restart at zero.
- Before a round the site asks `check(...)`: if the round would take ε past the target, it is declined.
- The ledger is append-only and hash-chained: every entry (σ fixed, steps spent, round declined, reset) carries
  the HMAC-SHA256 of its body and of the one before, keyed with a site secret kept in the site's state folder
  beside the primary copy (`ledger.key`, 0600), so that someone who can write both copies cannot rewrite them
  consistently without that secret. It is written atomically to two places on the site's volume. Every open checks
  both copies against their chains and against each other; an edited, missing or diverging ledger raises
  `LedgerTampered`, and the site refuses to train until an operator restores a copy or runs the recorded
  `cardiacfl site ledger reset --reason ...`.
- `locked_ledger(...)` holds a file lock from read to write, so two rounds at one site cannot lose an update.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from opacus.accountants import RDPAccountant

from shared_models.atomic_files import atomic_write_bytes

LEDGER_VERSION = 3  # 2: the same chain, unkeyed SHA-256 (migrated once, while the site has no ledger key yet)
GENESIS = "0" * 64
KEY_FILE = "ledger.key"


class LedgerTampered(RuntimeError):
    """The ledger cannot be trusted: missing, edited or diverging copies. The site must not train."""


@dataclass
class PlannedPhase:
    phase: str
    sample_rate: float  # batch size / training samples of this phase at this site
    steps: int  # optimizer steps over all rounds of the phase
    budget_share: float = 0.0  # the study's split of the budget (0: one σ for the whole plan)


def epsilon_of(history: list[tuple[float, float, int]], delta: float) -> float:
    """ε of an RDP accountant history [(noise_multiplier, sample_rate, steps), ...] at δ."""
    if not history:
        return 0.0
    accountant = RDPAccountant()
    accountant.history = [tuple(h) for h in history]
    return float(accountant.get_epsilon(delta))


def noise_for_plan(plan: list[PlannedPhase], target_epsilon: float, delta: float, spent: list | None = None) -> float:
    """Smallest σ (to 1 %) whose plan, added to what was already `spent`, ends at or below target_epsilon."""
    spent = list(spent or [])

    def total(sigma: float) -> float:
        return epsilon_of(spent + [(sigma, p.sample_rate, p.steps) for p in plan if p.steps > 0], delta)

    low, high = 0.3, 1.0
    while total(high) > target_epsilon:
        low, high = high, high * 2
        if high > 1e4:
            raise ValueError(f"no noise multiplier reaches ε={target_epsilon} for this plan; the budget is already spent")
    while high - low > 0.01 * high:
        middle = (low + high) / 2
        low, high = (middle, high) if total(middle) > target_epsilon else (low, middle)
    return high


def split_noise_for_plan(plan: list[PlannedPhase], target_epsilon: float, delta: float,
                         spent: list | None = None) -> dict[str, float]:
    """σ per phase when the study splits the budget: phase by phase, the smallest σ after which the cumulative ε
    (what was spent, the earlier phases at their σ, this phase) is at most the cumulative share of the target.
    The last phase thus ends at or below sum(shares) x target: the split moves budget between phases, never past it."""
    spent, sigmas, cumulative = list(spent or []), {}, 0.0
    for phase in plan:
        cumulative += phase.budget_share
        if phase.steps <= 0:
            continue
        sigma = noise_for_plan([phase], min(cumulative, 1.0) * target_epsilon, delta, spent)
        sigmas[phase.phase] = sigma
        spent.append((sigma, phase.sample_rate, phase.steps))
    return sigmas


@dataclass
class PrivacyLedger:
    path: Path
    site_id: str
    target_epsilon: float
    target_delta: float
    copy_path: Path | None = None  # the second copy, in another place on the site's volume
    entries: list[dict] = field(default_factory=list)  # the hash chain, oldest first

    @classmethod
    def open(cls, path: str | Path, *, site_id: str, target_epsilon: float, target_delta: float,
             copy_path: str | Path | None = None) -> "PrivacyLedger":
        """Read and verify the ledger (both copies). Both absent: a new, empty ledger."""
        path = Path(path)
        copy = Path(copy_path) if copy_path else None
        if copy is not None and not copy.exists() and _version(path) == 1:
            _migrate_version_1(path, site_id, copy)
        if _version(path) == 2:
            _migrate_version_2(path, site_id, copy)
        key = ledger_key(path)
        primary = _read_chain(path, site_id, key)
        second = _read_chain(copy, site_id, key) if copy else primary
        if primary is None and second is None:
            entries = []
        elif primary is None or second is None:
            missing = path if primary is None else copy
            raise LedgerTampered(f"{missing}: privacy ledger copy is missing while the other copy exists")
        elif primary != second:
            raise LedgerTampered(f"{path} and {copy}: the two privacy ledger copies diverge")
        else:
            entries = primary
        # The budget can be lowered in the site config but spending never restarts.
        return cls(path=path, site_id=site_id, target_epsilon=target_epsilon, target_delta=target_delta,
                   copy_path=copy, entries=entries)

    # -- views of the chain -------------------------------------------------------------------------
    @property
    def noise_multiplier(self) -> float | None:
        plans = [e["sigma"] for e in self.entries if e["kind"] == "plan"]
        return plans[-1] if plans else None

    @property
    def history(self) -> list[list]:
        """[[σ, q, steps], ...] in the order they were spent (an RDP accountant history)."""
        return [list(e["mechanism"]) for e in self.entries if e["kind"] == "spend"]

    @property
    def rounds(self) -> list[dict]:
        return [e for e in self.entries if e["kind"] == "spend"]

    @property
    def epsilon(self) -> float:
        return epsilon_of(self.history, self.target_delta)

    # -- decisions and records ----------------------------------------------------------------------
    def plan(self, phases: list[PlannedPhase], phase: str | None = None) -> float:
        """Fix σ for the site's whole plan the first time (later calls keep it) and return it (for `phase` where
        the study splits the budget between phases: `split_noise_for_plan`)."""
        if self.noise_multiplier is None:
            if any(p.budget_share for p in phases):
                for name, sigma in split_noise_for_plan(phases, self.target_epsilon, self.target_delta, self.history).items():
                    self._append({"kind": "plan", "sigma": sigma, "phase": name}, save=False)
                self.save()
            else:
                self._append({"kind": "plan", "sigma": noise_for_plan(phases, self.target_epsilon, self.target_delta, self.history)})
        if phase is not None:
            per_phase = {e["phase"]: e["sigma"] for e in self.entries if e["kind"] == "plan" and e.get("phase")}
            if per_phase:
                if phase not in per_phase:
                    raise ValueError(f"the ledger's plan has no σ for phase {phase!r} (planned: {', '.join(per_phase)})")
                return per_phase[phase]
        return self.noise_multiplier

    def epsilon_after(self, sample_rate: float, steps: int, sigma: float | None = None) -> float:
        sigma = self.noise_multiplier if sigma is None else sigma
        return epsilon_of(self.history + [[sigma, sample_rate, steps]], self.target_delta)

    def check(self, sample_rate: float, steps: int, sigma: float | None = None) -> str | None:
        """None when the round fits the budget, else the reason to decline it. `sigma`: the noise this round
        carries (default: the site's planned σ; distributed DP: the study's, which the SecAgg+ sum carries)."""
        after = self.epsilon_after(sample_rate, steps, sigma)
        if after > self.target_epsilon + 1e-9:
            return (f"round would spend ε to {after:.2f}, past this site's budget ε={self.target_epsilon:g} "
                    f"(spent so far {self.epsilon:.2f})")
        return None

    def record(self, history: list, *, study: str, phase: str, server_round: int, steps: int) -> float:
        """Append what a round spent: the part of the accountant's history (which continues the ledger's)
        beyond what the ledger already holds. Returns the lifetime ε."""
        new = _merged(history)
        old = _merged(self.history)
        if len(new) < len(old) or new[: len(old) - 1] != old[:-1] or (old and (new[len(old) - 1][:2] != old[-1][:2]
                                                                          or new[len(old) - 1][2] < old[-1][2])):
            raise ValueError("accountant history does not extend the ledger's; refusing to overwrite spent privacy")
        spent = []
        if old:
            extra = new[len(old) - 1][2] - old[-1][2]
            if extra:
                spent.append([*old[-1][:2], extra])
        spent += new[len(old):] if old else new
        spent = [[float(sigma), float(rate), int(n)] for sigma, rate, n in spent]
        lifetime = epsilon_of(self.history + spent, self.target_delta)
        for index, mechanism in enumerate(spent):
            closing = {"epsilon": lifetime} if index == len(spent) - 1 else {}  # the round's last entry carries its ε
            self._append({"kind": "spend", "mechanism": mechanism, "study": study, "phase": phase, "round": server_round,
                          "steps": steps, **closing}, save=False)
        self.save()
        return lifetime

    def record_decline(self, *, study: str, phase: str, server_round: int, reason: str) -> None:
        self._append({"kind": "decline", "study": study, "phase": phase, "round": server_round, "reason": reason})

    # -- persistence --------------------------------------------------------------------------------
    def _append(self, entry: dict, save: bool = True) -> None:
        entry = {"seq": len(self.entries), "time": time.time(), **entry}
        entry["prev"] = self.entries[-1]["hash"] if self.entries else GENESIS
        entry["hash"] = _entry_hash(entry, ledger_key(self.path, create=True))
        self.entries.append(entry)
        if save:
            self.save()

    def save(self) -> None:
        """Write both copies; only ever extending what is on disk (append-only)."""
        on_disk = _read_chain(self.path, self.site_id, ledger_key(self.path)) or []
        if self.entries[: len(on_disk)] != on_disk:
            raise LedgerTampered(f"{self.path}: the ledger on disk changed since it was read; refusing to overwrite it")
        data = json.dumps({"version": LEDGER_VERSION, "site_id": self.site_id, "entries": self.entries}, indent=1).encode()
        atomic_write_bytes(self.path, data)
        if self.copy_path:
            atomic_write_bytes(self.copy_path, data)


def ledger_key(path: Path, *, create: bool = False) -> bytes | None:
    """The site's ledger secret, beside the primary copy; made (0600) with the first entry of a new ledger."""
    key_path = Path(path).with_name(KEY_FILE)
    if key_path.is_file():
        return bytes.fromhex(key_path.read_text().strip())
    if not create:
        return None
    key_path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(os.urandom(32).hex())
    return ledger_key(path)


def _entry_hash(entry: dict, key: bytes | None) -> str:
    body = json.dumps({k: v for k, v in entry.items() if k != "hash"}, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, body, hashlib.sha256).hexdigest() if key is not None else hashlib.sha256(body).hexdigest()


def _read_chain(path: Path | None, site_id: str, key: bytes | None, version: int = LEDGER_VERSION) -> list[dict] | None:
    """The verified entries of one copy, None when the file does not exist."""
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise LedgerTampered(f"{path}: privacy ledger is unreadable: {err}") from err
    if not isinstance(data, dict) or data.get("version") != version:
        raise LedgerTampered(f"{path}: privacy ledger version {data.get('version') if isinstance(data, dict) else '?'!r}, "
                             f"expected {version}")
    if version == LEDGER_VERSION and key is None and data.get("entries"):
        raise LedgerTampered(f"{path}: the site's ledger key ({KEY_FILE} beside it) is missing: the chain cannot be checked")
    if data.get("site_id") != site_id:
        raise ValueError(f"{path}: privacy ledger belongs to site {data.get('site_id')!r}, not {site_id!r}")
    previous = GENESIS
    for index, entry in enumerate(data.get("entries", [])):
        if (entry.get("seq") != index or entry.get("prev") != previous
                or not hmac.compare_digest(str(entry.get("hash")), _entry_hash(entry, key))):
            raise LedgerTampered(f"{path}: privacy ledger entry {index} does not match its hash chain (edited or reordered)")
        previous = entry["hash"]
    return data.get("entries", [])


def _version(path: Path) -> int | None:
    try:
        return json.loads(path.read_text()).get("version")
    except (OSError, ValueError, AttributeError):
        return None


def _migrate_version_2(path: Path, site_id: str, copy: Path | None) -> None:
    """An unkeyed chain of an earlier release, verified as it was, chained again under a new site key (kept as
    `.v2` beside it). Only while the site has no key: with one, a version-2 ledger is a downgrade and refused."""
    if ledger_key(path) is not None:
        raise LedgerTampered(f"{path}: an unkeyed (version 2) ledger where this site already keys its ledger")
    entries = _read_chain(path, site_id, None, version=2)
    if copy is not None and copy.exists() and _read_chain(copy, site_id, None, version=2) != entries:
        raise LedgerTampered(f"{path} and {copy}: the two privacy ledger copies diverge")
    ledger = PrivacyLedger(path=path, site_id=site_id, target_epsilon=0.0, target_delta=0.0, copy_path=copy)
    for old in [path, copy]:
        if old is not None and old.exists():
            old.rename(old.with_name(old.name + ".v2"))
    for entry in entries or []:
        ledger._append({k: v for k, v in entry.items() if k not in ("seq", "prev", "hash")}, save=False)
    ledger._append({"kind": "migrated", "from_version": 2}, save=False)
    ledger.save()


def _migrate_version_1(path: Path, site_id: str, copy: Path) -> None:
    """A single-file ledger of an earlier release becomes a chain with the same spending (nothing is lost)."""
    old = json.loads(path.read_text())
    if old.get("site_id") != site_id:
        raise ValueError(f"{path}: privacy ledger belongs to site {old.get('site_id')!r}, not {site_id!r}")
    ledger = PrivacyLedger(path=path, site_id=site_id, target_epsilon=0.0, target_delta=0.0, copy_path=copy)
    path.rename(path.with_name(path.name + ".v1"))
    ledger._append({"kind": "migrated", "from_version": 1}, save=False)
    if old.get("noise_multiplier") is not None:
        ledger._append({"kind": "plan", "sigma": old["noise_multiplier"]}, save=False)
    for mechanism in old.get("history", []):
        ledger._append({"kind": "spend", "mechanism": list(mechanism), "study": "", "phase": "", "round": 0, "steps": 0},
                       save=False)
    for declined in old.get("declined", []):
        ledger._append({"kind": "decline", **{k: declined.get(k) for k in ("study", "phase", "round", "reason")}}, save=False)
    ledger.save()


def _merged(history: list) -> list[list]:
    """Consecutive entries with the same (σ, q) merged, as Opacus' accountant merges them."""
    out: list[list] = []
    for sigma, rate, steps in history:
        if out and out[-1][0] == sigma and out[-1][1] == rate:
            out[-1][2] += int(steps)
        else:
            out.append([float(sigma), float(rate), int(steps)])
    return out


@contextlib.contextmanager
def locked_ledger(path: Path, **kwargs) -> Iterator[PrivacyLedger]:
    """Open the ledger under an exclusive file lock held until the block ends (read -> decide -> write)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield PrivacyLedger.open(path, **kwargs)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def reset_ledger(path: Path, *, site_id: str, reason: str, copy_path: Path | None = None) -> Path:
    """The operator's explicit way out of a refused ledger: the old copies are kept beside it for audit, and
    a new chain starts with a reset entry naming who reset it, when and why. Spending restarts at zero, so
    the server sees this site's ε go down and flags it."""
    if not reason.strip():
        raise ValueError("a reset needs a reason")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    kept = []
    for copy in (path, copy_path):
        if copy is not None and copy.exists():
            target = copy.with_name(f"{copy.name}.reset-{stamp}")
            copy.rename(target)
            kept.append(str(target))
    ledger = PrivacyLedger(path=path, site_id=site_id, target_epsilon=0.0, target_delta=0.0, copy_path=copy_path)
    ledger._append({"kind": "reset", "reason": reason, "operator": _operator(), "kept": kept})
    return path


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return "unknown"
