"""Every read of the run database, in one place: the dashboard, the summary, `study status/stop`, the lab's
progress poller and the study runner's resume all ask here. Each function takes an Engine (readers open theirs
with `rundb.reader.open_readonly`, which never migrates) and returns plain values or rows detached from their
session, so no caller writes SQL of its own.
"""

from __future__ import annotations

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from rundb.schema import Generation, Round, SiteMetric, Study


def latest_study(engine: Engine) -> Study | None:
    with Session(engine) as s:
        return s.scalars(select(Study).order_by(Study.id.desc())).first()


def study(engine: Engine, study_id: int) -> Study | None:
    with Session(engine) as s:
        return s.get(Study, study_id)


def study_status(engine: Engine, study_id: int) -> str | None:
    with Session(engine) as s:
        return s.scalar(select(Study.status).where(Study.id == study_id))


def study_started_after(engine: Engine, after: float) -> Study | None:
    """The latest study the ServerApp started at or after `after` (a time.time() value)."""
    with Session(engine) as s:
        return s.scalars(select(Study).where(Study.started >= after).order_by(Study.id.desc())).first()


def studies(engine: Engine) -> list[Study]:
    with Session(engine) as s:
        return list(s.scalars(select(Study).order_by(Study.id.desc())))


def resumable_study(engine: Engine, name: str) -> int | None:
    """The latest study of this name that did not finish (interrupted, failed or left running)."""
    with Session(engine) as s:  # two columns only: they exist at every schema revision
        row = s.execute(select(Study.id, Study.status).where(Study.name == name).order_by(Study.id.desc())).first()
    return row.id if row is not None and row.status != "finished" else None


def rounds(engine: Engine, study_id: int) -> list[Round]:
    with Session(engine) as s:
        return list(s.scalars(select(Round).filter_by(study_id=study_id).order_by(Round.id)))


def last_aggregated_round(engine: Engine, study_id: int, phase: str) -> int:
    """The last round of `phase` whose global model was aggregated and saved (0: none)."""
    with Session(engine) as s:
        rounds_done = s.scalars(select(Round.server_round).where(
            Round.study_id == study_id, Round.phase == phase, Round.checkpoint != "", Round.seconds.is_not(None)))
        return max(rounds_done, default=0)


def site_metrics(engine: Engine, study_id: int, kind: str) -> list[SiteMetric]:
    with Session(engine) as s:
        return list(s.scalars(select(SiteMetric).filter_by(study_id=study_id, kind=kind).order_by(SiteMetric.id)))


def site_metric_columns(engine: Engine, study_id: int, kind: str, keys: tuple[str, ...],
                        text_keys: frozenset[str] = frozenset()) -> list[tuple]:
    """(site, phase, round, examples, epsilon, time, *keys) per row; only `keys` are read out of the JSON column,
    in SQL, so a page showing one metric does not parse every metric of every row."""
    values = [(SiteMetric.metrics[k].as_string() if k in text_keys else SiteMetric.metrics[k].as_float()).label(k)
              for k in keys]
    with Session(engine) as s:
        return [tuple(row) for row in s.execute(
            select(SiteMetric.site, SiteMetric.phase, SiteMetric.server_round, SiteMetric.examples, SiteMetric.epsilon,
                   SiteMetric.time, *values)
            .where(SiteMetric.study_id == study_id, SiteMetric.kind == kind).order_by(SiteMetric.id))]


def recent_site_metrics(engine: Engine, study_id: int, kind: str, limit: int = 50) -> list[dict]:
    """The metrics dicts of the latest `limit` rows of a kind (which metric names a study has)."""
    with Session(engine) as s:
        return list(s.scalars(select(SiteMetric.metrics).filter_by(study_id=study_id, kind=kind)
                              .order_by(SiteMetric.id.desc()).limit(limit)))


def last_epsilon_by_site(engine: Engine) -> dict[str, float]:
    """Each site's most recently reported lifetime ε over every study in this database."""
    with Session(engine) as s:
        rows = s.execute(select(SiteMetric.site, SiteMetric.epsilon).where(SiteMetric.epsilon.is_not(None))
                         .order_by(SiteMetric.id)).all()
    return {site: float(epsilon) for site, epsilon in rows}


def generations(engine: Engine, study_id: int) -> list[dict]:
    """The gallery's rows without their blobs."""
    with Session(engine) as s:
        rows = s.execute(select(Generation.id, Generation.phase, Generation.server_round, Generation.reference,
                                Generation.ssim, Generation.psnr).filter_by(study_id=study_id).order_by(Generation.id))
        return [dict(row._mapping) for row in rows]


def generation(engine: Engine, generation_id: int) -> Generation | None:
    with Session(engine) as s:
        return s.get(Generation, generation_id)
