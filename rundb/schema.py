"""The run database's tables. Only aggregates are stored: per-site metrics, ε, round summaries and generated
clips from the lab's reference panel; never patient data. A change here needs a migration in
`rundb/migrations/versions/` (tests/test_run_db.py checks that the two agree)."""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
from sqlalchemy import JSON, Float, ForeignKey, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column



class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON}


class Study(Base):
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    preset: Mapped[str] = mapped_column(String(20))
    config: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(20), default="running")  # running | finished | failed | interrupted
    status_reason: Mapped[str] = mapped_column(String(500), default="")  # why it failed or stopped
    current_phase: Mapped[str] = mapped_column(String(20), default="")
    current_round: Mapped[int] = mapped_column(default=0)
    total_rounds: Mapped[int] = mapped_column(default=0)
    started: Mapped[float] = mapped_column(Float, default=time.time)
    finished: Mapped[float | None] = mapped_column(Float, nullable=True)


class _PerRound:
    """The columns every per-round record shares."""

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    phase: Mapped[str] = mapped_column(String(20))
    server_round: Mapped[int]


class Round(_PerRound, Base):
    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("study_id", "phase", "server_round"),)
    started: Mapped[float] = mapped_column(Float)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    participants: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"trained": [...], "declined": {...}, "failed": n}
    global_metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)  # example-weighted means of site metrics
    model_hash: Mapped[str] = mapped_column(String(64), default="")
    checkpoint: Mapped[str] = mapped_column(String(500), default="")


class SiteMetric(_PerRound, Base):
    __tablename__ = "site_metrics"
    site: Mapped[str] = mapped_column(String(100), index=True)
    kind: Mapped[str] = mapped_column(String(10))  # fit | evaluate
    examples: Mapped[int] = mapped_column(default=0)
    epsilon: Mapped[float | None] = mapped_column(Float, nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    time: Mapped[float] = mapped_column(Float, default=time.time)


class Generation(_PerRound, Base):
    __tablename__ = "generations"
    reference: Mapped[str] = mapped_column(String(100))  # reference-panel id (lab-held, not patient data)
    ecg: Mapped[bytes] = mapped_column(LargeBinary)  # float32 (12, T) npy bytes
    generated: Mapped[bytes] = mapped_column(LargeBinary)  # float32 (F, H, W) npy bytes
    real: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    ssim: Mapped[float | None] = mapped_column(Float, nullable=True)
    psnr: Mapped[float | None] = mapped_column(Float, nullable=True)


def npy_bytes(array: np.ndarray) -> bytes:
    """Arrays stored in the database as .npy bytes (float32)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, dtype=np.float32))
    return buffer.getvalue()


def npy_array(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)
