"""One study at the lab, owned by `StudyRun`: the model, the run database, the checkpoints and the held-out panel.

A study runs its phases in order (pretrain -> generator -> finetune), each from the previous phase's weights.
Per phase: the lab's step on its own public data (recorded as phase `public-<phase>` round 0), then the plans'
federated rounds. Flower's DefaultWorkflow drives the rounds (with SecAgg+ as its fit step when the study asks);
the runner's own fit and evaluate steps wrap Flower's, so each round begins and ends here: the strategy only
instructs, screens and aggregates, and the runner takes its typed record (protocol/round_record.py), checkpoints
the new global model, scores it on the panel and writes the record. It writes that one record whole at each of the
round's three moments: begun (the dashboard shows a round in progress), trained (aggregated or not, with the
sites' fit reports; resume counts rounds from here) and evaluated (the sites' validation reports).

Resume (`resume`): the latest unfinished study of the same name goes on in the same database row, from the last
round it aggregated; a round that was cut off runs again under the same number (the sites' ledgers count what
they spent on the lost attempt). Each study keeps its checkpoints in `out-dir/study-<id>/`, with the strategy's
state (FedAdam/FedYogi moments) beside every round's global model.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import torch
from flwr.server import LegacyContext, ServerConfig
from flwr.server.workflow import DefaultWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, Key
from flwr.server.workflow.default_workflows import default_evaluate_workflow, default_fit_workflow

from protocol.participants import PUBLIC_STEP, Participants
from protocol.round_record import RoundRecord
from protocol.simulated_site import simulated_site_configs
from rundb.writer import RunDatabase
from server.public_data import PublicBankSource, public_sites, train_on_public_data
from server.overlap_check import ask_sites, lab_fingerprints, refuse_panel_overlap
from server.reference_panel import LabPanel, generations
from server.round_admission import ask_admission, lab_mask_generator
from server.secure_aggregation import fit_workflow
from server.site_roster import SiteRoster
from server.strategy import StudyRounds, make_strategy
from server.study_config import PhasePlan, StudyConfig, load_study_config
from shared_models.cardiacnets import build_model
from shared_models.checkpoint import load_checkpoint, save_checkpoint
from shared_models.model_arrays import load_numpy_state, numpy_state
from shared_models.training import PHASES
from sitedata.site_config import load_site_config


def model_hash(state: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name, array in state.items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


def parse_site_nodes(text: str) -> dict[int, str]:
    """'hospital-a=123,hospital-b=456' (the node ids the lab got when it registered each site's key)."""
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    return {int(node): site.strip() for site, node in pairs}


def strategy_path(checkpoint: Path) -> Path:
    return checkpoint.with_suffix(".strategy.npz")


class StudyRun:
    def __init__(self, study: StudyConfig, *, db: str, out: Path, panel_config: str = "", resume: bool = False,
                 node_sites: dict[int, str] | None = None, simulated_sites: list[str] | None = None):
        self.study, self.out, self.resume = study, out, resume
        self.db = RunDatabase(db)
        self.panel = LabPanel(panel_config) if panel_config else None
        if self.panel is not None and study.public_data is not None and self.panel.data_root in {
                load_site_config(p).data_root for p in study.public_data.sites}:
            raise ValueError(f"{panel_config}: the reference panel is also declared as public training data; "
                             "held-out figures need data the model never saw")  # checked before the slow ingest
        self.gallery = self.panel.references(study.generate_reference) if self.panel else []
        torch.manual_seed(study.seed)
        self.model = load_checkpoint(study.initial_checkpoint)[0] if study.initial_checkpoint else build_model(study.preset)
        if self.model.config.preset != study.preset:
            raise ValueError(f"{study.initial_checkpoint}: a {self.model.config.preset!r} model, the study's preset is {study.preset!r}")
        self.roster = SiteRoster(node_sites, self.db.last_epsilon_by_site())
        enrolled = sorted(set((node_sites or {}).values())) or sorted(simulated_sites or [])
        self.study_id = self._open_study(enrolled)
        self.checkpoints = out / f"study-{self.study_id}"  # each study its own (the public-data cache is shared)
        self.public_sites = public_sites(study.public_data) if study.public_data is not None else []

    @classmethod
    def from_run_config(cls, run_config) -> StudyRun:
        """The ServerApp's run config: study-config, run-db, out-dir, reference-panel, resume, site-nodes."""
        simulated = [load_site_config(p).site_id for p in simulated_site_configs(run_config)]
        return cls(load_study_config(str(run_config["study-config"])), db=str(run_config.get("run-db", "runs/study.db")),
                   out=Path(str(run_config.get("out-dir", "runs/study"))),
                   panel_config=str(run_config.get("reference-panel", "")),
                   resume=str(run_config.get("resume", "false")).lower() == "true",
                   node_sites=parse_site_nodes(str(run_config.get("site-nodes", ""))), simulated_sites=simulated)

    def _open_study(self, enrolled: list[str]) -> int:
        """The study's row: the resumed one, or a new one naming the sites expected (the dashboard shows a site
        that never reported)."""
        study = self.study
        study_id = self.db.resumable_study(study.name) if self.resume else None
        if study_id is not None:
            self.db.note_resume(study_id, "resumed")
            return study_id
        config = {"phases": [p.__dict__ for p in study.phases], "secagg": study.secagg.__dict__, "dp": study.dp,
                  "public_data": self._public_summary(), "sites": enrolled}
        return self.db.start_study(study.name, study.preset, config, total_rounds=sum(p.rounds for p in study.phases))

    def _public_summary(self) -> dict | None:
        """What the run DB and the dashboard say about the public data (no paths: they are the lab's)."""
        public = self.study.public_data
        if public is None:
            return None
        return {"description": public.description, "sites": [p.stem for p in public.sites], "dp": False,
                **{f"{phase}_epochs": public.epochs(phase) for phase in PHASES}}

    # --- the study ---

    def run(self, grid, context) -> None:
        try:
            # the app this study runs as, by the hash each site must have approved (client/app_gate.py)
            self.db.note_config(self.study_id, "app", {"fab_hash": str(getattr(getattr(grid, "run", None), "fab_hash", ""))})
            self.check_overlap(grid)
            for phase in PHASES:
                self.run_phase(grid, context, phase)
            self.db.update_study(self.study_id, status="finished", finished=time.time())
        except (KeyboardInterrupt, SystemExit):  # SIGINT, or Flower's SIGTERM handler (sys.exit): the lab stopped
            self.db.update_study(self.study_id, status="interrupted", finished=time.time(), status_reason=(
                "the ServerApp was stopped (the lab stopped, or the run was stopped); `study submit --resume` "
                "continues from the last aggregated round"))
            raise
        except BaseException as err:
            self.db.update_study(self.study_id, status="failed", status_reason=f"{type(err).__name__}: {err}"[:500],
                                 finished=time.time())
            raise

    def check_overlap(self, grid) -> None:
        """Refuse to start when a site holds any of the held-out panel's ECGs (server/overlap_check.py)."""
        if self.panel is None and not self.public_sites:
            return
        fingerprints = lab_fingerprints(self.panel.dataset.site if self.panel else None, self.public_sites)
        result = ask_sites(grid, fingerprints)
        self.db.note_config(self.study_id, "overlap_check", {"counts": result.counts, "unchecked": result.unchecked})
        print(result.summary(), flush=True)
        refuse_panel_overlap(result)

    def run_phase(self, grid, context, phase: str) -> None:
        """The public step, then each plan's rounds; resumed phases go on after their last aggregated round."""
        plans = [plan for plan in self.study.phases if plan.name == phase]
        finished = self.checkpoints / f"{phase}.pt"
        if self.resume and plans and finished.is_file():
            self.model, _ = load_checkpoint(finished)
            return
        done, moments = self._resume_point(phase) if self.resume and plans else (0, {})
        if not done:
            self.public_step(phase)
        before = 0  # rounds of this phase's earlier plans: rounds are numbered through the phase
        for plan in plans:
            start = max(done, before)
            if start < before + plan.rounds:
                self.run_plan(grid, context, plan, start, before + plan.rounds - start,
                              moments if start == done else None)
            before += plan.rounds
        if plans:
            save_checkpoint(finished, self.model, phase=phase, step=before)

    def _resume_point(self, phase: str) -> tuple[int, dict]:
        """(the last round of this phase the study aggregated, the strategy state saved with it)."""
        done = self.db.last_aggregated_round(self.study_id, phase)
        if not done:
            return 0, {}
        last = self.checkpoints / f"{phase}_round{done}.pt"
        self.model, _ = load_checkpoint(last)
        return done, dict(np.load(strategy_path(last))) if strategy_path(last).is_file() else {}

    def run_plan(self, grid, context, plan: PhasePlan, start: int, rounds: int, moments: dict | None) -> None:
        bank = None
        if plan.name == "pretrain" and self.study.dp:
            bank = PublicBankSource(self.study.preset, self.public_sites)
        strategy = make_strategy(plan, self.study, self.roster, numpy_state(self.model), round_offset=start,
                                 strategy_state=moments, public_bank=bank)
        legacy = LegacyContext(context, config=ServerConfig(num_rounds=rounds), strategy=strategy)
        self.workflow(strategy)(grid, legacy)
        load_numpy_state(self.model, strategy.global_state)

    def workflow(self, strategy: StudyRounds) -> DefaultWorkflow:
        """Flower's round loop, with this runner's steps around its fit and evaluate steps."""
        fit = fit_workflow(self.study.secagg) or default_fit_workflow

        def fit_step(grid, context) -> None:
            flower_round = int(context.state.config_records[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND])
            self.begin_round(strategy.plan.name, strategy.phase_round(flower_round))
            if self.admit(grid, context, strategy, flower_round):
                fit(grid, context)
            self.finish_fit(strategy)

        def evaluate_step(grid, context) -> None:
            default_evaluate_workflow(grid, context)
            self.finish_evaluation(strategy)

        return DefaultWorkflow(fit_workflow=fit_step, evaluate_workflow=evaluate_step)

    # --- one round ---

    def admit(self, grid, context, strategy: StudyRounds, flower_round: int) -> bool:
        """Ask the connected sites not barred from training whether they will train this round, before anyone
        does (protocol/round_admission.py); False: too few would, and the round stops here. Like Flower's own
        sampling, it first waits for the plan's minimum of connected sites."""
        context.client_manager.wait_for(strategy.plan.min_sites)
        nodes = [proxy.node_id for proxy in context.client_manager.all().values()
                 if not self.roster.has_declined(proxy.node_id)]
        answers, errors, silent = ask_admission(grid, nodes, strategy.admission_config(flower_round),
                                                lab_mask_generator(self.study.secagg.enabled),
                                                timeout_s=min(self.study.secagg.timeout_s, 300.0))
        return strategy.admit(flower_round, answers, silent, errors)

    def public_step(self, phase: str) -> None:
        """The lab's public data for this phase, before its federated rounds."""
        public = self.study.public_data
        done = train_on_public_data(self.model, public, self.public_sites, phase, self.out,
                                    seed=self.study.seed) if public else None
        if done is None:
            return
        name = f"public-{phase}"
        summary = {"examples": done.examples, "epochs": done.epochs, "dp": False, "cached": done.cached,
                   "description": public.description}
        record = RoundRecord(name, 0, started=time.time(), seconds=done.seconds,
                             participants=Participants(public=summary, outcome=PUBLIC_STEP),
                             global_metrics=self.panel_scores(name), checkpoint=str(self.out / f"{name}.pt"))
        self.db.record_round(self.study_id, record)
        self.record_gallery(name, 0)

    def begin_round(self, phase: str, server_round: int) -> None:
        self.db.update_study(self.study_id, current_phase=phase, current_round=server_round)
        self.db.record_round(self.study_id, RoundRecord(phase, server_round, started=time.time()), reports=[])

    def finish_fit(self, strategy: StudyRounds) -> None:
        """The strategy's record after training; for an aggregated round, checkpoint and score the new model."""
        record = strategy.fit_record()
        if record.participants.aggregated:
            load_numpy_state(self.model, strategy.global_state)
            path = self.checkpoints / f"{record.phase}_round{record.server_round}.pt"
            save_checkpoint(path, self.model, phase=record.phase, step=record.server_round)
            moments = strategy.strategy_state()
            if moments:  # FedAdam/FedYogi moments: a resumed phase goes on with them
                np.savez(strategy_path(path), **moments)
            record.global_metrics |= self.panel_scores(record.phase)
            record.model_hash, record.checkpoint = model_hash(strategy.global_state), str(path)
        self.db.record_round(self.study_id, record, reports=[r for r in record.site_reports if r.kind == "fit"])
        if record.participants.aggregated:
            self.record_gallery(record.phase, record.server_round)

    def finish_evaluation(self, strategy: StudyRounds) -> None:
        """The same record with the sites' validation reports and their example-weighted means."""
        record = strategy.take_round()
        self.db.record_round(self.study_id, record, reports=[r for r in record.site_reports if r.kind == "evaluate"])

    def panel_scores(self, phase: str) -> dict[str, float]:
        """The model's held-out scores on the lab's panel (`lab/` keys), and after a federated round its gain over
        the public model alone, paired on the same subjects; nothing without a panel."""
        if not self.panel:
            return {}
        scores = self.panel.evaluate(self.model, phase.removeprefix("public-"), seed=self.study.seed)
        public = self.out / f"public-{phase}.pt"
        if not phase.startswith("public-") and self.study.public_data is not None and public.is_file():
            scores |= self.panel.gains(self.model, load_checkpoint(public)[0], phase, seed=self.study.seed)
        return scores

    def record_gallery(self, phase: str, server_round: int) -> None:
        if phase.removeprefix("public-") == "generator" and self.gallery:
            self.db.add_generations(self.study_id, phase, server_round,
                                    generations(self.model, self.gallery, seed=self.study.seed))
