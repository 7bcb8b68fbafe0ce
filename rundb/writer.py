"""The run database's only writer (the ServerApp, and the seeded study for tests): creates the tables on
first use and brings an older database up to the newest schema revision (`rundb.migrate`); every write is its own
transaction."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from rundb.engine import create_run_engine
from rundb.migrate import upgrade_to_head
from rundb.schema import Generation, Round, SiteMetric, Study
from shared_models.jsonable import finite_or_null
from shared_models.site_metrics import MetricKey as K


class RunDatabase:
    """One engine and sessionmaker per process; every write is its own transaction."""

    def __init__(self, url: str):
        self.engine = create_run_engine(url)
        upgrade_to_head(self.engine)
        self.session = sessionmaker(self.engine, expire_on_commit=False)

    def start_study(self, name: str, preset: str, config: dict, total_rounds: int) -> int:
        with self.session.begin() as s:
            study = Study(name=name, preset=preset, config=finite_or_null(config), total_rounds=total_rounds)
            s.add(study)
            s.flush()
            return study.id

    def update_study(self, study_id: int, **values) -> None:
        with self.session.begin() as s:
            study = s.get(Study, study_id)
            for key, value in values.items():
                setattr(study, key, value)

    def upsert_round(self, study_id: int, phase: str, server_round: int, **values) -> None:
        """Create or update a round. Dict columns (participants, global metrics) gain the given keys: a round's
        record arrives in parts (the sites' fit and evaluate replies, the lab's own evaluation)."""
        with self.session.begin() as s:
            row = s.scalars(select(Round).filter_by(study_id=study_id, phase=phase, server_round=server_round)).first()
            if row is None:
                row = Round(study_id=study_id, phase=phase, server_round=server_round, started=values.pop("started", time.time()))
                s.add(row)
            for key, value in values.items():
                if isinstance(value, dict):
                    value = finite_or_null({**(getattr(row, key) or {}), **value})
                setattr(row, key, value)

    def add_site_metrics(self, study_id: int, rows: list[tuple[str, int, str, str, dict]]) -> None:
        """(phase, round, kind, site, metrics) rows, all in one transaction."""
        with self.session.begin() as s:
            s.add_all([SiteMetric(study_id=study_id, phase=phase, server_round=server_round, site=site, kind=kind,
                                  examples=int(metrics.get(K.EXAMPLES, metrics.get(K.NUM_EXAMPLES, 0)) or 0),
                                  epsilon=metrics.get(K.EPSILON), metrics=finite_or_null(metrics))
                       for phase, server_round, kind, site, metrics in rows])

    def add_generation(self, study_id: int, phase: str, server_round: int, reference: str, **values) -> None:
        with self.session.begin() as s:
            s.add(Generation(study_id=study_id, phase=phase, server_round=server_round, reference=reference, **values))

    def resumable_study(self, name: str) -> int | None:
        """The latest study of this name that did not finish (interrupted, failed or left running)."""
        with self.session() as s:
            study = s.scalars(select(Study).where(Study.name == name).order_by(Study.id.desc())).first()
        return study.id if study is not None and study.status != "finished" else None

    def note_resume(self, study_id: int, reason: str) -> None:
        """Back to running; the audit keeps when and why it stopped before."""
        with self.session.begin() as s:
            study = s.get(Study, study_id)
            history = list(study.config.get("resumes", [])) + [{"at": time.time(), "after": study.status,
                                                                "reason": study.status_reason or reason}]
            study.config = {**study.config, "resumes": history}
            study.status, study.status_reason, study.finished = "running", "", None

    def last_aggregated_round(self, study_id: int, phase: str) -> int:
        """The last round of `phase` whose global model was aggregated and saved (0: none)."""
        with self.session() as s:
            rounds = s.scalars(select(Round.server_round).where(
                Round.study_id == study_id, Round.phase == phase, Round.checkpoint != "", Round.seconds.is_not(None)))
            return max(rounds, default=0)

    def last_epsilon_by_site(self) -> dict[str, float]:
        """Each site's most recently reported lifetime ε over every study in this database."""
        with self.session() as s:
            rows = s.execute(select(SiteMetric.site, SiteMetric.epsilon).where(SiteMetric.epsilon.is_not(None))
                             .order_by(SiteMetric.id)).all()
        return {site: float(epsilon) for site, epsilon in rows}
