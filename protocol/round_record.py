"""The typed record of one round, as the strategy hands it to the study runner and the runner writes it to the
run database once: who took part (protocol/participants.py), what each site reported, the global metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.participants import Participants


@dataclass
class SiteReport:
    """One site's reply as recorded: `kind` is fit, evaluate or cross (the simulation's cross-site matrix)."""
    site: str
    kind: str
    examples: int
    metrics: dict


@dataclass
class RoundRecord:
    phase: str
    server_round: int
    started: float
    seconds: float | None = None  # None while the round runs
    participants: Participants = field(default_factory=Participants)
    site_reports: list[SiteReport] = field(default_factory=list)
    global_metrics: dict = field(default_factory=dict)  # the sites' example-weighted means, the lab's `lab/` scores
    model_hash: str = ""
    checkpoint: str = ""
