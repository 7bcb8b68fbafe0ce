"""The run database's writer, used by the study runner (server/study_run.py) and the test seeder: it creates the
tables on first use and brings an older database up to the newest schema revision (`rundb.migrate`); every write
is its own transaction, and a round's record is written whole each time (protocol/round_record.py). Reads are in
`rundb.queries`; an operator's command that marks a study stopped uses `mark_study_ended`, which never migrates.
"""

from __future__ import annotations

import time

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from protocol.jsonable import finite_or_null
from protocol.round_record import RoundRecord, SiteReport
from protocol.site_metrics import MetricKey as K
from rundb import queries
from rundb.engine import create_run_engine
from rundb.migrate import upgrade_to_head
from rundb.schema import Generation, Round, SiteMetric, Study


class RunDatabase:
    """One engine and sessionmaker per process."""

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
        _update_study(self.engine, study_id, **values)

    def record_round(self, study_id: int, record: RoundRecord, reports: list[SiteReport] | None = None) -> None:
        """The round's row, whole (replacing what an earlier write or attempt of the same round left), and the
        sites' reports not written before (default: the record's), together."""
        with self.session.begin() as s:
            row = s.scalars(select(Round).filter_by(study_id=study_id, phase=record.phase,
                                                    server_round=record.server_round)).first()
            if row is None:
                row = Round(study_id=study_id, phase=record.phase, server_round=record.server_round)
                s.add(row)
            row.started, row.seconds = record.started, record.seconds
            row.participants = finite_or_null(record.participants.to_json())
            row.global_metrics = finite_or_null(record.global_metrics)
            row.model_hash, row.checkpoint = record.model_hash, record.checkpoint
            s.add_all(_site_rows(study_id, record.phase, record.server_round,
                                 record.site_reports if reports is None else reports))

    def add_generations(self, study_id: int, phase: str, server_round: int, generations: list[dict]) -> None:
        """The gallery of one round: dicts of reference, ecg, generated, real, ssim, psnr (npy bytes)."""
        with self.session.begin() as s:
            s.add_all([Generation(study_id=study_id, phase=phase, server_round=server_round, **g) for g in generations])

    def resumable_study(self, name: str) -> int | None:
        return queries.resumable_study(self.engine, name)

    def note_resume(self, study_id: int, reason: str) -> None:
        """Back to running; the audit keeps when and why it stopped before."""
        with self.session.begin() as s:
            study = s.get(Study, study_id)
            history = list(study.config.get("resumes", [])) + [{"at": time.time(), "after": study.status,
                                                                "reason": study.status_reason or reason}]
            study.config = {**study.config, "resumes": history}
            study.status, study.status_reason, study.finished = "running", "", None

    def note_config(self, study_id: int, key: str, value) -> None:
        """One more entry in the study's config (what the dashboard shows about how it started)."""
        with self.session.begin() as s:
            study = s.get(Study, study_id)
            study.config = {**study.config, key: finite_or_null(value)}

    def last_aggregated_round(self, study_id: int, phase: str) -> int:
        return queries.last_aggregated_round(self.engine, study_id, phase)

    def last_epsilon_by_site(self) -> dict[str, float]:
        return queries.last_epsilon_by_site(self.engine)


def _site_rows(study_id: int, phase: str, server_round: int, reports: list[SiteReport]) -> list[SiteMetric]:
    return [SiteMetric(study_id=study_id, phase=phase, server_round=server_round, site=r.site, kind=r.kind,
                       examples=r.examples, epsilon=r.metrics.get(K.EPSILON), metrics=finite_or_null(r.metrics))
            for r in reports]


def _update_study(engine: Engine, study_id: int, **values) -> None:
    with Session(engine) as s, s.begin():
        study = s.get(Study, study_id)
        for key, value in values.items():
            setattr(study, key, value)


def add_site_reports(path_or_url: str, study_id: int, phase: str, server_round: int, reports: list[SiteReport]) -> None:
    """Reports made outside a round (the simulation's cross-site matrix), in one transaction; never migrates."""
    engine = create_run_engine(path_or_url)
    try:
        with Session(engine) as s, s.begin():
            s.add_all(_site_rows(study_id, phase, server_round, reports))
    finally:
        engine.dispose()


def mark_study_ended(path_or_url: str, study_id: int, status: str, reason: str) -> None:
    """An operator's command ends a study (`study stop`, Ctrl-C, a dead ServerApp); never migrates."""
    engine = create_run_engine(path_or_url)
    try:
        _update_study(engine, study_id, status=status, status_reason=reason, finished=time.time())
    finally:
        engine.dispose()
