"""The participants contract: who took part in a round and how, as the study runner records it in the run
database's `participants` column and the summary, `study status` and the dashboard read it. Beside `MetricKey`
(what one site says), this is what the lab says about all of them; its field names are the JSON keys.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

AGGREGATED = "aggregated"
PUBLIC_STEP = "the lab's own public data (no DP, no site)"  # the outcome of a `public-<phase>` step


@dataclass
class Participants:
    trained: list[str] = field(default_factory=list)  # sites whose update is in the new global model
    declined: dict[str, str] = field(default_factory=dict)  # site -> its reason (budget, policy, its own checks)
    failed: int = 0  # replies lost to errors or rejected
    rejected: dict[str, str] = field(default_factory=dict)  # fit replies dropped by the server's screen, and why
    flags: dict[str, str] = field(default_factory=dict)  # accepted, but worth a look (a lifetime ε that went down)
    dropped: list[str] = field(default_factory=list)  # asked to train, never replied
    refused: dict[str, str] = field(default_factory=dict)  # site -> why it would not run the lab's app at all
    outcome: str = AGGREGATED  # or PUBLIC_STEP, or "not aggregated: <why>; the global model is unchanged"
    part_weights: dict[str, float] = field(default_factory=dict)  # mean part weight (protocol/codec.py)
    evaluate_rejected: dict[str, str] = field(default_factory=dict)
    evaluate_flags: dict[str, str] = field(default_factory=dict)
    public: dict | None = None  # the lab's step on its own public data: examples, epochs, dp, cached, description

    @property
    def aggregated(self) -> bool:
        return self.outcome == AGGREGATED

    @property
    def all_rejected(self) -> dict[str, str]:
        return {**self.rejected, **self.evaluate_rejected}

    @property
    def all_flags(self) -> dict[str, str]:
        return {**self.flags, **self.evaluate_flags}

    def to_json(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: dict | None) -> Participants:
        """A stored record; keys this version does not know (a newer writer's) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in names})
