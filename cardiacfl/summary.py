"""The end-of-study summary table: per-site final metrics and ε, and the global metrics per phase."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session

from rundb.reader import open_readonly
from rundb.schema import Round, SiteMetric, Study
from shared_models.site_metrics import HEADLINE
from shared_models.site_metrics import MetricKey as K



def print_summary(db_path: Path, console: Console | None = None) -> None:
    console = console or Console()
    with Session(open_readonly(str(db_path))) as s:
        study = s.scalars(select(Study).order_by(Study.id.desc())).first()
        if study is None:
            console.print("no study in the run database")
            return
        rounds = s.scalars(select(Round).filter_by(study_id=study.id).order_by(Round.id)).all()
        evaluations = s.scalars(select(SiteMetric).filter_by(study_id=study.id, kind="evaluate").order_by(SiteMetric.id)).all()
        fits = s.scalars(select(SiteMetric).filter_by(study_id=study.id, kind="fit").order_by(SiteMetric.id)).all()
    table = Table(title=f"study {study.name} ({study.preset}): global validation metrics, last round of each phase")
    table.add_column("phase")
    table.add_column("rounds")
    table.add_column("s/round")
    for key in HEADLINE:
        table.add_column(key)
    for phase in dict.fromkeys(r.phase for r in rounds):
        phase_rounds = [r for r in rounds if r.phase == phase]
        last = phase_rounds[-1].global_metrics or {}
        seconds = [r.seconds for r in phase_rounds if r.seconds]
        table.add_row(phase, str(len(phase_rounds)), f"{sum(seconds) / len(seconds):.1f}" if seconds else "",
                      *[f"{last[k]:.3f}" if isinstance(last.get(k), float) else "" for k in HEADLINE])
    console.print(table)
    sites = Table(title="per site: final validation metrics and privacy spent")
    for column in ("site", "phase", K.MEAN_AUROC, K.MEAN_R2, "ε spent", "ε budget", "σ", "declined"):
        sites.add_column(column)
    latest_eval = {(m.site): m for m in evaluations}
    latest_fit: dict[str, SiteMetric] = {}
    declined: dict[str, int] = {}
    for m in fits:
        if m.epsilon is not None:
            latest_fit[m.site] = m
        declined[m.site] = declined.get(m.site, 0) + int(bool(m.metrics.get(K.DECLINED)))
    for site, m in sorted(latest_eval.items()):
        fit = latest_fit.get(site)
        eps = fit.epsilon if fit else m.metrics.get(K.EPSILON)
        sites.add_row(site, m.phase, _fmt(m.metrics.get(K.MEAN_AUROC)), _fmt(m.metrics.get(K.MEAN_R2)), _fmt(eps),
                      _fmt(fit.metrics.get(K.TARGET_EPSILON) if fit else None),
                      _fmt(fit.metrics.get(K.NOISE_MULTIPLIER) if fit else None), str(declined.get(site, 0)))
    console.print(sites)


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"
