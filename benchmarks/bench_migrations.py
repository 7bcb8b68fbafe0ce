"""How long the lab's in-place upgrade takes on a large run database: a seeded study (default 1,000 rounds x
10 sites) taken back to the first schema revision (Alembic's downgrades), then opened by the writer, which
upgrades it; on SQLite and, given a server, on PostgreSQL, in one run. Checks that no row was lost on the way.
The migrations so far alter only the one-row-per-study `studies` table, so the time does not grow with rounds.

    .venv/bin/python benchmarks/bench_migrations.py [--rounds 1000] [--sites 10] [--postgres ADMIN_URL]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from alembic import command
from sqlalchemy import func, select

from rundb.seed import seed_study
from rundb.engine import create_run_engine
from rundb.migrate import alembic_config, current_revision, head_revision
from rundb.schema import Round, SiteMetric
from rundb.scratch import scratch_database
from rundb.writer import RunDatabase


def counts(url: str) -> tuple[int, int]:
    engine = create_run_engine(url)
    with engine.connect() as c:
        result = c.execute(select(func.count()).select_from(Round)).scalar(), c.execute(select(func.count()).select_from(SiteMetric)).scalar()
    engine.dispose()
    return result


def measure(url: str, rounds: int, sites: int, backend: str) -> None:
    seed_study(url, rounds=rounds, sites=sites)
    before = counts(url)
    engine = create_run_engine(url)
    with engine.begin() as c:
        command.downgrade(alembic_config(c), "0001")  # as a lab's database from the first release
    with engine.connect() as c:
        assert current_revision(c) == "0001"
    start = time.perf_counter()
    RunDatabase(url).engine.dispose()
    seconds = time.perf_counter() - start
    with engine.connect() as c:
        assert current_revision(c) == head_revision()
    engine.dispose()
    assert counts(url) == before, (counts(url), before)
    print(f"{backend:10s} {before[0]:6d} rounds {before[1]:7d} site-metric rows: 0001 -> {head_revision()} in {seconds:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--postgres", default="", help="PostgreSQL URL of a role that may create databases")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        measure(str(Path(work) / "run.db"), args.rounds, args.sites, "SQLite")
    if args.postgres:
        with scratch_database(args.postgres, prefix="cardiacfl_bench") as url:
            measure(url, args.rounds, args.sites, "PostgreSQL")


if __name__ == "__main__":
    main()
