"""Flower ServerApp: one study at the lab (server/study_run.py owns it).

Run config (`flwr run --run-config`): `study-config` (path to the study TOML on the server), `run-db`
(SQLAlchemy URL or SQLite path), `out-dir` (global checkpoints), `reference-panel` (optional site config of the
lab's reference panel), `site-nodes` ("site=node_id,..." from key registration: who each node is), `resume`
("true": the latest unfinished study of the same name goes on).
"""

from __future__ import annotations

from flwr.common import Context
from flwr.server import Grid, ServerApp

app = ServerApp()


def install_grid_poll_cap() -> None:
    """Pull the sites' replies every 0.5 s instead of every 3 s (protocol/flower_timing.py)."""
    import importlib

    from protocol import flower_timing

    flower_timing.install_poll_cap(importlib.import_module("flwr.superlink.grid.http_grid"))


@app.main()
def main(grid: Grid, context: Context) -> None:
    from server.study_run import StudyRun  # torch and the model code: only once the ServerApp runs

    install_grid_poll_cap()
    StudyRun.from_run_config(context.run_config).run(grid, context)
