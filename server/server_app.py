"""Flower ServerApp: runs a study's phases in order (pretrain -> generator -> finetune), each from the
previous phase's global weights, with SecAgg+ for training rounds, and records the run database.

Run config (`flwr run --run-config`): `study-config` (path to the study TOML on the server), `run-db`
(SQLAlchemy URL or SQLite path), `out-dir` (global checkpoints), `reference-panel` (optional site config of
the lab's reference panel), `site-nodes` ("site=node_id,..." from key registration: who each node is). With `[public_data]` in the study,
each phase starts with the lab training it on its own non-private data (server/public_data.py), recorded as phase
`public-<phase>` round 0. Each study keeps its checkpoints in `out-dir/study-<id>/`, with the strategy's state
(FedAdam/FedYogi moments) beside every round's global model. `resume` ("true"): the latest unfinished study of the
same name goes on in the same database row, from the last round it aggregated; a round that was cut off runs
again under the same number (the sites' ledgers count what they spent on the lost attempt).
"""

from __future__ import annotations

import time
from pathlib import Path

from flwr.common import Context
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig

app = ServerApp()


def enrolled_sites(node_sites: dict[int, str], run_config) -> list[str]:
    """The sites this study expects, so the dashboard can show one that never reported: the registered sites'
    names, or in simulation the site configs' ids (the lab holds those); empty without either."""
    from shared_models.simulated_site import simulated_site_configs
    from sitedata.site_config import load_site_config

    if node_sites:
        return sorted(set(node_sites.values()))
    return sorted(load_site_config(p).site_id for p in simulated_site_configs(run_config))


def strategy_path(checkpoint: Path) -> Path:
    return checkpoint.with_suffix(".strategy.npz")


def parse_site_nodes(text: str) -> dict[int, str]:
    """'hospital-a=123,hospital-b=456' (the node ids the lab got when it registered each site's key)."""
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    return {int(node): site.strip() for site, node in pairs}


def install_grid_poll_cap() -> None:
    """Pull the sites' replies every 0.5 s instead of every 3 s (shared_models/flower_timing.py)."""
    import importlib

    from shared_models import flower_timing

    flower_timing.install_poll_cap(importlib.import_module("flwr.superlink.grid.http_grid"))


@app.main()
def main(grid: Grid, context: Context) -> None:
    import numpy as np
    import torch

    from server.public_data import public_sites, train_on_public_data
    from server.reference_panel import LabPanel, record_generations
    from rundb.writer import RunDatabase
    from server.secure_aggregation import phase_workflow
    from server.strategy import StudyRecorder, make_strategy
    from server.study_config import load_study_config
    from sitedata.site_config import load_site_config
    from shared_models.cardiacnets import build_model
    from shared_models.checkpoint import load_checkpoint, save_checkpoint
    from shared_models.model_arrays import load_numpy_state, numpy_state
    from shared_models.training import PHASES

    install_grid_poll_cap()
    run_config = context.run_config
    study = load_study_config(str(run_config["study-config"]))
    db = RunDatabase(str(run_config.get("run-db", "runs/study.db")))
    out = Path(str(run_config.get("out-dir", "runs/study")))
    panel_config = str(run_config.get("reference-panel", ""))
    lab_panel = LabPanel(panel_config) if panel_config else None
    panel = lab_panel.references(study.generate_reference) if lab_panel else []

    torch.manual_seed(study.seed)
    model = build_model(study.preset)
    public = study.public_data
    resume = str(run_config.get("resume", "false")).lower() == "true"
    node_sites = parse_site_nodes(str(run_config.get("site-nodes", "")))
    study_id = db.resumable_study(study.name) if resume else None
    if study_id is None:
        study_id = db.start_study(study.name, study.preset, {"phases": [p.__dict__ for p in study.phases],
                                                             "secagg": study.secagg.__dict__, "dp": study.dp,
                                                             "public_data": _public_summary(public),
                                                             "sites": enrolled_sites(node_sites, run_config)},
                                  total_rounds=sum(p.rounds for p in study.phases))
    else:
        db.note_resume(study_id, "resumed")
    rounds_out = out / f"study-{study_id}"  # each study its own checkpoints (the public-data cache is shared)
    if public is not None:
        if lab_panel is not None and lab_panel.data_root in {load_site_config(p).data_root for p in public.sites}:
            raise ValueError(f"{panel_config}: the reference panel is also declared as public training data; "
                             "held-out figures need data the model never saw")  # checked before the slow ingest
        public_data_sites = public_sites(public)

    def public_step(phase: str) -> None:
        """The lab's public data for this phase, before its federated rounds (recorded as `public-<phase>` round 0)."""
        done = train_on_public_data(model, public, public_data_sites, phase, out, seed=study.seed) if public else None
        if done is None:
            return
        name = f"public-{phase}"
        lab = lab_panel.evaluate(model, phase, seed=study.seed) if lab_panel else {}
        db.upsert_round(study_id, name, 0, started=time.time(), seconds=done.seconds, global_metrics=lab,
                        participants={"public": {"examples": done.examples, "epochs": done.epochs, "dp": False,
                                                 "cached": done.cached, "description": public.description}},
                        checkpoint=str(out / f"{name}.pt"))
        if phase == "generator":
            record_generations(db, study_id, name, 0, model, panel, seed=study.seed)

    recorder = StudyRecorder(db, study_id, study, node_sites=node_sites)

    def on_round_end(phase: str, server_round: int, global_state: dict, strategy_state: dict) -> str:
        load_numpy_state(model, global_state)
        path = rounds_out / f"{phase}_round{server_round}.pt"
        save_checkpoint(path, model, phase=phase, step=server_round)
        if strategy_state:  # FedAdam/FedYogi moments: a resumed phase goes on with them
            np.savez(strategy_path(path), **strategy_state)
        if lab_panel is not None:
            db.upsert_round(study_id, phase, server_round, global_metrics=lab_panel.evaluate(model, phase, seed=study.seed))
        if phase == "generator":
            record_generations(db, study_id, phase, server_round, model, panel, seed=study.seed)
        return str(path)

    recorder.on_round_end = on_round_end
    try:
        for phase in PHASES:  # each phase: the lab's public data first, then the sites' rounds
            plans = [plan for plan in study.phases if plan.name == phase]
            finished = rounds_out / f"{phase}.pt"
            if resume and plans and finished.is_file():
                model, _ = load_checkpoint(finished)
                continue
            done = db.last_aggregated_round(study_id, phase) if resume and plans else 0
            moments = {}
            if done:  # go on after the last round this study finished; the public step is inside that model
                last = rounds_out / f"{phase}_round{done}.pt"
                model, _ = load_checkpoint(last)
                if strategy_path(last).is_file():
                    moments = dict(np.load(strategy_path(last)))
            else:
                public_step(phase)
            state = numpy_state(model)
            before = 0  # rounds of this phase's earlier plans: rounds are numbered through the phase
            for plan in plans:
                start = max(done, before)
                if start < before + plan.rounds:
                    strategy = make_strategy(plan, recorder, state, round_offset=start,
                                             strategy_state=moments if start == done else None)
                    legacy = LegacyContext(context, config=ServerConfig(num_rounds=before + plan.rounds - start),
                                           strategy=strategy)
                    phase_workflow(study.secagg)(grid, legacy)
                    strategy.record_unaggregated()
                    state = strategy.global_state
                    load_numpy_state(model, state)
                before += plan.rounds
            if plans:
                save_checkpoint(finished, model, phase=phase, step=before)
        db.update_study(study_id, status="finished", finished=time.time())
    except BaseException as err:
        db.update_study(study_id, status="failed", status_reason=f"{type(err).__name__}: {err}"[:500], finished=time.time())
        raise


def _public_summary(public) -> dict | None:
    """What the run DB and the dashboard say about the public data (no paths: they are the lab's)."""
    from shared_models.training import PHASES

    if public is None:
        return None
    return {"description": public.description, "sites": [p.stem for p in public.sites], "dp": False,
            **{f"{phase}_epochs": public.epochs(phase) for phase in PHASES}}
