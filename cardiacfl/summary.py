"""The end-of-study summary: the global metrics per phase, the lab's held-out scores beside their baselines, and
per-site final metrics and ε. Readable at 80 columns, in a terminal or piped: headers are words, and phase and site
names are never cut (their columns do not wrap; other columns wrap their words)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from protocol.participants import Participants
from protocol.site_metrics import HEADLINE
from protocol.site_metrics import MetricKey as K
from protocol.site_metrics import GAIN_KEYS, gain_key, interval_keys, lab_key, label
from rundb import queries
from rundb.reader import open_readonly
from rundb.schema import Round, SiteMetric

# What the lab's own held-out panel says after each phase: (metric key, baseline label, baseline key or value).
LAB_ROWS = {
    "pretrain": [(K.RETRIEVAL_TOP1, "chance", K.RETRIEVAL_CHANCE), (K.RETRIEVAL_TOP5, "chance", "5x"),
                 (K.RETRIEVAL_MEDIAN_RANK, "chance", "half"), (K.CMR_PAIRWISE_COSINE, "all alike", 1.0),
                 (K.ECG_PAIRWISE_COSINE, "all alike", 1.0)],
    "generator": [(K.SSIM, "mean training clip", K.BASELINE_SSIM),
                  (K.EF_PROXY_MAE, "mean training clip", K.BASELINE_EF_PROXY_MAE)],
    "finetune": [(K.MEAN_AUROC, "chance", 0.5), (K.MEAN_R2, "predicting the mean", 0.0)],
}


def print_summary(db_path: Path, console: Console | None = None) -> None:
    console = console or Console()
    engine = open_readonly(str(db_path))
    try:
        study = queries.latest_study(engine)
        if study is None:
            console.print("no study in the run database")
            return
        rounds = queries.rounds(engine, study.id)
        evaluations = queries.site_metrics(engine, study.id, "evaluate")
        fits = queries.site_metrics(engine, study.id, "fit")
    finally:
        engine.dispose()
    console.print(_phase_table(study, rounds))
    if (lab := _lab_table(rounds)) is not None:
        console.print(lab)
    console.print(_site_table(evaluations, fits))


def _name_column(table: Table, header: str, names) -> None:
    """A column whose names are shown whole at any terminal width."""
    table.add_column(header, no_wrap=True, min_width=max([len(header), *(len(n) for n in names)]))


def _phase_table(study, rounds: list[Round]) -> Table:
    table = Table(title=f"study {study.name} ({study.preset}): global validation metrics, last round of each phase")
    phases = list(dict.fromkeys(r.phase for r in rounds))
    _name_column(table, "phase", phases)
    table.add_column("rounds", justify="right", min_width=6)
    table.add_column("seconds per round", justify="right", min_width=7)
    table.add_column("metrics (the sites' example-weighted means)")
    for phase in phases:
        phase_rounds = [r for r in rounds if r.phase == phase]
        last = phase_rounds[-1].global_metrics or {}
        seconds = [r.seconds for r in phase_rounds if r.seconds]
        outcome = Participants.from_json(phase_rounds[-1].participants)
        shown = ", ".join(f"{label(k)} {last[k]:.3f}" for k in HEADLINE if isinstance(last.get(k), float))
        table.add_row(phase, str(len(phase_rounds)), f"{sum(seconds) / len(seconds):.1f}" if seconds else "-",
                      shown or ("-" if outcome.aggregated else outcome.outcome))
    return table


def _lab_table(rounds: list[Round]) -> Table | None:
    """Held-out metrics the lab computed on its own reference panel (no site data), last round of each phase."""
    last_by_phase = {r.phase: r.global_metrics or {} for r in rounds}
    if not any(k.startswith(lab_key("")) for metrics in last_by_phase.values() for k in metrics):
        return None
    table = Table(title="held-out: the lab's reference panel (no site trained on it), last round of each phase; "
                        "public-* rows: the lab's public data alone, before any site took part")
    _name_column(table, "phase", last_by_phase)
    table.add_column("metric")
    table.add_column("value", min_width=5)
    table.add_column("95 % interval", min_width=13)
    table.add_column("baseline")
    for phase, metrics in last_by_phase.items():
        for key, baseline_label, baseline in LAB_ROWS.get(phase.removeprefix("public-"), []):
            baseline = _baseline(metrics, baseline)
            low, high = (metrics.get(lab_key(k)) for k in interval_keys(key))
            interval = f"{_fmt(low)}-{_fmt(high)}" if low is not None and high is not None else "-"
            table.add_row(phase, label(key), _fmt(metrics.get(lab_key(key))), interval,
                          f"{_fmt(baseline)} ({baseline_label})")
        for key in GAIN_KEYS.get(phase, ()):  # federated phases: the gain over the public model, paired
            gain = lab_key(gain_key(key))
            if gain in metrics:
                low, high = (metrics.get(k) for k in interval_keys(gain))
                interval = f"{_fmt(low)}-{_fmt(high)}" if low is not None and high is not None else "-"
                table.add_row(phase, f"gain in {label(key)}", _fmt(metrics[gain]), interval, "0 (the public model alone)")
    return table


def _baseline(metrics: dict, baseline):
    """A number, a key of the same round's metrics, or retrieval chance in another form ('5x': top-5,
    'half': the median rank of a random ordering)."""
    chance = metrics.get(lab_key(K.RETRIEVAL_CHANCE))
    if baseline == "5x":
        return min(1.0, 5 * chance) if chance else None
    if baseline == "half":
        return (1 / chance + 1) / 2 if chance else None
    return metrics.get(lab_key(baseline)) if isinstance(baseline, str) else baseline


def _site_table(evaluations: list[SiteMetric], fits: list[SiteMetric]) -> Table:
    latest_eval = {m.site: m for m in evaluations}
    latest_fit: dict[str, SiteMetric] = {}
    declined: dict[str, int] = {}
    for m in fits:
        if m.epsilon is not None:
            latest_fit[m.site] = m
        declined[m.site] = declined.get(m.site, 0) + int(bool(m.metrics.get(K.DECLINED)))
    table = Table(title="per site: validation metrics after its last phase, and privacy spent")
    _name_column(table, "site", latest_eval)
    for column in (label(K.MEAN_AUROC), label(K.MEAN_R2), label(K.EPSILON), label(K.TARGET_EPSILON),
                   label(K.NOISE_MULTIPLIER), "rounds declined"):
        # numbers whole; headers wrap at their spaces (no word is longer than the column)
        table.add_column(column, justify="right", min_width=max(5, *(len(word) for word in column.split())))
    for site, m in sorted(latest_eval.items()):
        fit = latest_fit.get(site)
        eps = fit.epsilon if fit else m.metrics.get(K.EPSILON)
        table.add_row(site, _fmt(m.metrics.get(K.MEAN_AUROC)), _fmt(m.metrics.get(K.MEAN_R2)), _fmt(eps),
                      _fmt(fit.metrics.get(K.TARGET_EPSILON) if fit else None),
                      _fmt(fit.metrics.get(K.NOISE_MULTIPLIER) if fit else None), str(declined.get(site, 0)))
    return table


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"
