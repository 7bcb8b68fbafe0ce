"""A site's lifetime privacy ledger, kept on the site's disk: the RDP accountant's history over every round,
phase, study and restart, so the ε a site reports is always the total it has spent.

- The noise multiplier σ is fixed once, for the site's whole plan (every phase's sample rate x steps) so
  that the plan ends at the target ε; `make_private_with_epsilon` per round would restart at zero.
- Before a round the site asks `check(...)`: if the round would take ε past the target, it is declined.
- After a round `record(...)` appends the steps and rewrites the file atomically (temp file + rename), so a
  crash leaves either the old or the new ledger, never a torn one.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from opacus.accountants import RDPAccountant

from shared_models.atomic_files import atomic_write_bytes

LEDGER_VERSION = 1


@dataclass
class PlannedPhase:
    phase: str
    sample_rate: float  # batch size / training samples of this phase at this site
    steps: int  # optimizer steps over all rounds of the phase


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


@dataclass
class PrivacyLedger:
    path: Path
    site_id: str
    target_epsilon: float
    target_delta: float
    noise_multiplier: float | None = None
    history: list[list] = field(default_factory=list)  # [[σ, q, steps], ...] in the order they were spent
    rounds: list[dict] = field(default_factory=list)  # what each round spent, for audits and the dashboard
    declined: list[dict] = field(default_factory=list)

    @classmethod
    def open(cls, path: str | Path, *, site_id: str, target_epsilon: float, target_delta: float) -> "PrivacyLedger":
        path = Path(path)
        if not path.is_file():
            return cls(path=path, site_id=site_id, target_epsilon=target_epsilon, target_delta=target_delta)
        data = json.loads(path.read_text())
        if data.get("version") != LEDGER_VERSION:
            raise ValueError(f"{path}: privacy ledger version {data.get('version')!r}, expected {LEDGER_VERSION}")
        if data["site_id"] != site_id:
            raise ValueError(f"{path}: privacy ledger belongs to site {data['site_id']!r}, not {site_id!r}")
        # The budget can be lowered in the site config but spending never restarts.
        return cls(path=path, site_id=site_id, target_epsilon=target_epsilon, target_delta=target_delta,
                   noise_multiplier=data["noise_multiplier"], history=data["history"], rounds=data["rounds"],
                   declined=data["declined"])

    @property
    def epsilon(self) -> float:
        return epsilon_of(self.history, self.target_delta)

    def plan(self, phases: list[PlannedPhase]) -> float:
        """Fix σ for the site's whole plan the first time (later calls keep it) and return it."""
        if self.noise_multiplier is None:
            self.noise_multiplier = noise_for_plan(phases, self.target_epsilon, self.target_delta, self.history)
            self.save()
        return self.noise_multiplier

    def epsilon_after(self, sample_rate: float, steps: int) -> float:
        return epsilon_of(self.history + [[self.noise_multiplier, sample_rate, steps]], self.target_delta)

    def check(self, sample_rate: float, steps: int) -> str | None:
        """None when the round fits the budget, else the reason to decline it."""
        after = self.epsilon_after(sample_rate, steps)
        if after > self.target_epsilon + 1e-9:
            return (f"round would spend ε to {after:.2f}, past this site's budget ε={self.target_epsilon:g} "
                    f"(spent so far {self.epsilon:.2f})")
        return None

    def record(self, history: list, *, study: str, phase: str, server_round: int, steps: int) -> float:
        """Replace the history with the accountant's after a round (it extends the previous one) and save."""
        if len(history) < len(self.history) or [list(h) for h in history[: len(self.history) - 1]] != self.history[:-1]:
            raise ValueError("accountant history does not extend the ledger's; refusing to overwrite spent privacy")
        self.history = [list(h) for h in history]
        epsilon = self.epsilon
        self.rounds.append({"study": study, "phase": phase, "round": server_round, "steps": steps,
                            "epsilon": epsilon, "time": time.time()})
        self.save()
        return epsilon

    def record_decline(self, *, study: str, phase: str, server_round: int, reason: str) -> None:
        self.declined.append({"study": study, "phase": phase, "round": server_round, "reason": reason, "time": time.time()})
        self.save()

    def save(self) -> None:
        data = {k: v for k, v in asdict(self).items() if k != "path"} | {"version": LEDGER_VERSION}
        atomic_write_bytes(self.path, json.dumps(data, indent=1).encode())
