"""Read-only queries of the run database for the dashboard: small pandas frames, cached by Streamlit.
Each page asks only for what it shows (one study, one kind of metric, generation thumbnails without the
other blobs)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import streamlit as st
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from protocol.participants import Participants
from rundb import queries
from rundb.reader import RunDbUnavailable, open_readonly
from rundb.reader import check_schema as reader_check_schema
from rundb.schema import npy_array
from rundb.url import display_url
from protocol.site_metrics import TEXT_KEYS, MetricKey

DB_ENV = "CARDIACFL_RUN_DB"
UTILITY_ENV = "CARDIACFL_UTILITY_JSON"  # benchmarks/privacy_utility.py's utility.json: the References page
TTL = 5  # seconds: pages refresh while a study runs


class DashboardDataError(RuntimeError):
    """A database the dashboard cannot show; the message says what to do."""


def db_url() -> str:
    url = os.environ.get(DB_ENV, "")
    if not url:
        raise DashboardDataError(f"No run database given: start with `cardiacfl dashboard --db URL` (or set {DB_ENV}).")
    return url


@st.cache_resource
def engine(url: str) -> Engine:
    try:
        return open_readonly(url)
    except RunDbUnavailable as err:
        raise DashboardDataError(str(err)) from err


def check_schema(url: str) -> None:
    try:
        reader_check_schema(engine(url))
    except RunDbUnavailable as err:
        raise DashboardDataError(str(err)) from err
    except SQLAlchemyError as err:  # a database server that is down, refuses this role or its password
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise DashboardDataError(f"Cannot read the run database at {display_url(url)}: {reason}") from err


@st.cache_data(ttl=TTL)
def studies(url: str) -> pd.DataFrame:
    return pd.DataFrame([{"id": r.id, "name": r.name, "preset": r.preset, "status": r.status, "status_reason": r.status_reason,
                          "phase": r.current_phase, "round": r.current_round, "total_rounds": r.total_rounds,
                          "started": pd.to_datetime(r.started, unit="s"),
                          "phases": [p["name"] for p in r.config.get("phases", [])],
                          "public_data": r.config.get("public_data"), "sites": r.config.get("sites", []),
                          "resumes": r.config.get("resumes", []),
                          "app_hash": (r.config.get("app") or {}).get("fab_hash", "")} for r in queries.studies(engine(url))])


def _joined(items: dict) -> str:
    return "; ".join(f"{k}: {v}" for k, v in items.items())


def _round_row(r) -> dict:
    who = Participants.from_json(r.participants)
    return {"phase": r.phase, "round": r.server_round, "started": pd.to_datetime(r.started, unit="s"),
            "seconds": r.seconds, "trained": ", ".join(who.trained), "declined": _joined(who.declined),
            "failed": who.failed, "dropped": ", ".join(who.dropped), "outcome": who.outcome,
            "rejected": _joined(who.all_rejected), "refused": _joined(who.refused), "flags": _joined(who.all_flags),
            "model_hash": r.model_hash,
            "checkpoint": r.checkpoint, **{f"global/{k}": v for k, v in (r.global_metrics or {}).items()}}


@st.cache_data(ttl=TTL)
def rounds(url: str, study_id: int) -> pd.DataFrame:
    frame = pd.DataFrame([_round_row(r) for r in queries.rounds(engine(url), study_id)])
    if not frame.empty:
        frame.insert(0, "step", range(1, len(frame) + 1))  # rounds counted across phases
    return frame


@st.cache_data(ttl=TTL)
def site_metrics(url: str, study_id: int, kind: str, keys: tuple[str, ...]) -> pd.DataFrame:
    """One row per (site, phase, round) with the requested metric keys as columns (read in SQL, rundb.queries)."""
    rows = queries.site_metric_columns(engine(url), study_id, kind, keys, TEXT_KEYS)
    frame = pd.DataFrame(rows, columns=["site", "phase", "round", "examples", "epsilon", "time", *keys])
    frame["time"] = pd.to_datetime(frame["time"], unit="s")
    return frame


@st.cache_data(ttl=TTL)
def metric_names(url: str, study_id: int, kind: str) -> list[str]:
    sample = queries.recent_site_metrics(engine(url), study_id, kind)
    names = {k for m in sample for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return sorted(names - {MetricKey.ROUND, MetricKey.DECLINED})


@st.cache_data(ttl=TTL)
def generations(url: str, study_id: int) -> pd.DataFrame:
    return pd.DataFrame(queries.generations(engine(url), study_id))


@st.cache_data(ttl=600)
def generation_arrays(url: str, generation_id: int) -> dict:
    g = queries.generation(engine(url), generation_id)
    return {"ecg": npy_array(g.ecg), "generated": npy_array(g.generated), "real": npy_array(g.real) if g.real else None}


def utility_path() -> Path | None:
    """The privacy-utility benchmark's rows the References page compares a study with, when given."""
    path = Path(os.environ.get(UTILITY_ENV, "")) if os.environ.get(UTILITY_ENV) else None
    return path if path is not None and path.is_file() else None


@st.cache_data(ttl=60)
def utility_rows(path: str) -> pd.DataFrame:
    try:
        rows = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise DashboardDataError(f"{path}: not a readable utility.json ({err})") from err
    return pd.DataFrame(rows)


def site_health(url: str, study_id: int) -> pd.DataFrame:
    """One row per site enrolled in the study or heard from: online or offline (since when), last round trained,
    rounds missed (finished rounds it neither trained nor declined), ε as last reported. A site that has missed
    the latest finished round is offline since it was last seen."""
    study = studies(url).set_index("id").loc[study_id]
    finished = rounds(url, study_id)
    finished = finished[finished["seconds"].notna() & ~finished["phase"].str.startswith("public-")] if not finished.empty else finished
    fits = site_metrics(url, study_id, "fit", (MetricKey.DECLINED,))
    seen = site_metrics(url, study_id, "evaluate", ())
    every = pd.concat([fits[["site", "time"]], seen[["site", "time"]]]) if not seen.empty else fits[["site", "time"]]
    names = sorted(set(study["sites"]) | set(every["site"]))
    rows = []
    for site in names:
        mine = fits[fits["site"] == site]
        trained = mine[(mine["examples"] > 0) & (mine[MetricKey.DECLINED].fillna(0) == 0)]
        answered = set(zip(mine["phase"], mine["round"]))
        missed = [(r.phase, r.round) for r in finished.itertuples() if (r.phase, r.round) not in answered]
        last_seen = every[every["site"] == site]["time"].max() if (every["site"] == site).any() else None
        latest_missed = not finished.empty and (finished.iloc[-1]["phase"], finished.iloc[-1]["round"]) not in answered
        state = "never reported" if last_seen is None else ("offline" if latest_missed else "online")
        epsilon = mine["epsilon"].dropna()
        rows.append({"site": site, "state": state, "last seen": last_seen,
                     "last round trained": f"{trained.iloc[-1]['phase']} {trained.iloc[-1]['round']}" if not trained.empty else "-",
                     "rounds missed": len(missed), "ε last reported": float(epsilon.iloc[-1]) if not epsilon.empty else None})
    return pd.DataFrame(rows, columns=["site", "state", "last seen", "last round trained", "rounds missed",
                                       "ε last reported"])
