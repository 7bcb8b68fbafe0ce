"""The end-of-study summary table: per-site final metrics and ε, and the global metrics per phase."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session

from rundb.reader import open_readonly
from rundb.schema import Round, SiteMetric, Study
from shared_models.site_metrics import HEADLINE
from shared_models.site_metrics import MetricKey as K
from shared_models.site_metrics import lab_key

# What the lab's own held-out panel says after each phase: (label, key, baseline label, baseline key or value).
LAB_ROWS = {
    "pretrain": [("ECG->CMR retrieval top-1", K.RETRIEVAL_TOP1, "chance", K.RETRIEVAL_CHANCE),
                 ("CMR embeddings' mean pairwise cosine", K.CMR_PAIRWISE_COSINE, "all alike", 1.0),
                 ("ECG embeddings' mean pairwise cosine", K.ECG_PAIRWISE_COSINE, "all alike", 1.0)],
    "generator": [("SSIM to the real clip", K.SSIM, "mean training clip", K.BASELINE_SSIM),
                  ("EF-proxy MAE", K.EF_PROXY_MAE, "mean training clip", K.BASELINE_EF_PROXY_MAE)],
    "finetune": [("mean AUROC", K.MEAN_AUROC, "chance", 0.5), ("mean R²", K.MEAN_R2, "predicting the mean", 0.0)],
}


def print_summary(db_path: Path, console: Console | None = None) -> None:
    # piped into a log, rich would wrap at 80 columns and cut site names; a log has room
    console = console or Console(width=None if sys.stdout.isatty() else 140)
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
    _print_lab_table(rounds, console)
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


def _print_lab_table(rounds: list[Round], console: Console) -> None:
    """Held-out metrics the lab computed on its own reference panel (no site data), last round of each phase."""
    last_by_phase = {r.phase: r.global_metrics or {} for r in rounds}
    if not any(k.startswith(lab_key("")) for metrics in last_by_phase.values() for k in metrics):
        return
    table = Table(title="held-out: the lab's reference panel (no site trained on it), last round of each phase; "
                        "public-* rows: the lab's public data alone, before any site took part")
    for column in ("phase", "metric", "value", "baseline"):
        table.add_column(column)
    for phase, metrics in last_by_phase.items():
        for label, key, baseline_label, baseline in LAB_ROWS.get(phase.removeprefix("public-"), []):
            if isinstance(baseline, str):
                baseline = metrics.get(lab_key(baseline))
            table.add_row(phase, label, _fmt(metrics.get(lab_key(key))), f"{_fmt(baseline)} ({baseline_label})")
    console.print(table)


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"
