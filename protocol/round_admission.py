"""Round admission: before a training round, the lab asks every site whether it will train it, and the round
starts only with enough contributors. Under SecAgg+ the lab sees only a sum, but a sum of one update is that
update, and a site that could not afford the round used to fail it for everyone after the others had spent ε.

The query (a Flower QUERY message, answered by the site's mod before any training) carries the round contract
and the SecAgg+ mask generator the lab will unmask with; each site answers from its own policy, budget, data and
generator: accept, the top-level model parts it would train, or decline with its reason (and its lifetime ε).
`decide` then admits the accepting sites when there are at least `min_contributors` of them; a part that fewer
(but some) would train is frozen for the round; with too few contributors the round stops before anyone trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

RECORD = "cardiacfl.admission"  # the ConfigRecord of the query (its presence marks the message) and of the reply
MASK_PRG = "mask_prg"  # query: the generator the lab's SecAgg+ workflow unmasks with (protocol/mask_prg.py)
NO_SECAGG = "none"  # ... or this, for a study without SecAgg+
SITE, ACCEPT, REASON, PARTS, EPSILON = "site", "accept", "reason", "parts", "epsilon"  # the reply's keys


@dataclass(frozen=True)
class Answer:
    site: str
    accept: bool
    reason: str = ""
    parts: frozenset[str] = frozenset()
    epsilon: float | None = None

    def to_record(self) -> dict:
        out = {SITE: self.site, ACCEPT: int(self.accept), REASON: self.reason, PARTS: ",".join(sorted(self.parts))}
        return out | ({EPSILON: float(self.epsilon)} if self.epsilon is not None else {})

    @classmethod
    def from_record(cls, record) -> "Answer":
        epsilon = record.get(EPSILON)
        return cls(site=str(record[SITE]), accept=bool(int(record[ACCEPT])), reason=str(record.get(REASON, "")),
                   parts=frozenset(p for p in str(record.get(PARTS, "")).split(",") if p),
                   epsilon=float(epsilon) if epsilon is not None else None)


@dataclass
class Decision:
    admitted: list[str] = field(default_factory=list)  # sites asked to train
    declined: dict[str, str] = field(default_factory=dict)  # site -> its reason
    silent: list[str] = field(default_factory=list)  # asked, did not answer in time
    frozen_parts: list[str] = field(default_factory=list)  # trained by too few sites: not trained this round
    stop: str = ""  # why the round does not start ("" when it does)


def decide(answers: list[Answer], silent: list[str], min_contributors: int) -> Decision:
    decision = Decision(declined={a.site: a.reason for a in answers if not a.accept}, silent=sorted(silent))
    accepting = [a for a in answers if a.accept and a.parts]
    trainers: dict[str, int] = {}
    for answer in accepting:
        for part in answer.parts:
            trainers[part] = trainers.get(part, 0) + 1
    frozen = sorted(p for p, n in trainers.items() if n < min_contributors)
    contributing = [a for a in accepting if a.parts - set(frozen)] if len(accepting) >= min_contributors else accepting
    if len(contributing) < min_contributors:
        why = "; ".join(f"{site} declined: {reason}" for site, reason in sorted(decision.declined.items()))
        decision.stop = (f"not aggregated: the round did not start: {len(contributing)} site(s) would contribute, a round needs at least "
                         f"{min_contributors} (secagg.min_contributors)" + (f" — {why}" if why else "")
                         + "; nobody trained and the global model is unchanged")
        return decision
    decision.admitted = sorted(a.site for a in contributing)
    decision.frozen_parts = frozen
    return decision
