"""Per-phase strategies: Flower's own FedAvg / FedProx / FedAdam / FedYogi with a thin layer that (1)
sends each round's instructions, (2) decodes the part-weighted average (see shared_models.weighted_parts)
before the strategy's own aggregation step, (3) stops asking sites that declined for lack of privacy
budget, and (4) records everything in the run database. Aggregation itself stays Flower's.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
from flwr.common import FitIns, EvaluateIns, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import FedAdam, FedAvg, FedProx, FedYogi

from server.run_db import RunDatabase
from server.study_config import PhasePlan, StudyConfig
from shared_models.weighted_parts import decode_aggregate

BASES = {"fedavg": FedAvg, "fedprox": FedProx, "fedadam": FedAdam, "fedyogi": FedYogi}


def model_hash(state: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name, array in state.items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


class StudyRecorder:
    """Study-wide bookkeeping shared by the phases' strategies."""

    def __init__(self, db: RunDatabase, study_id: int, study: StudyConfig):
        self.db, self.study_id, self.study = db, study_id, study
        self.declined_sites: dict[str, str] = {}  # site -> reason; they still evaluate
        self.node_site: dict[int, str] = {}
        self.on_round_end = None  # callback(phase, round, state) -> checkpoint path

    def site_of(self, node_id: int, metrics: dict) -> str:
        """The site a reply came from (sites name themselves in their metrics); remembered per node."""
        site = str(metrics.get("site", node_id))
        self.node_site[node_id] = site
        return site


def make_strategy(plan: PhasePlan, recorder: StudyRecorder, global_state: dict[str, np.ndarray]):
    base = BASES[plan.strategy]
    kwargs = dict(fraction_fit=1.0, fraction_evaluate=1.0, min_fit_clients=plan.min_sites,
                  min_evaluate_clients=plan.min_sites, min_available_clients=plan.min_sites,
                  initial_parameters=ndarrays_to_parameters(list(global_state.values())))
    if plan.strategy == "fedprox":
        kwargs["proximal_mu"] = plan.proximal_mu
    if plan.strategy in ("fedadam", "fedyogi"):
        kwargs.update(eta=plan.server_lr)

    class StudyStrategy(base):  # type: ignore[misc, valid-type]
        def __init__(self):
            super().__init__(**kwargs)
            self.plan, self.recorder = plan, recorder
            self.global_state = dict(global_state)
            self.round_started: dict[int, float] = {}
            self.aggregated: set[int] = set()

        def _config(self, server_round: int) -> dict:
            study = recorder.study
            return {"study": study.name, "phase": plan.name, "server_round": server_round, "preset": study.preset,
                    "plan": study.plan_text, "local_epochs": plan.local_epochs, "lr": plan.lr,
                    "proximal_mu": plan.proximal_mu if plan.strategy == "fedprox" else 0.0,
                    "finetune_mode": plan.finetune_mode, "dp": study.dp,
                    "max_site_examples": study.max_site_examples, "seed": study.seed}

        def record_unaggregated(self) -> None:
            """Rounds Flower moved past without calling aggregate_fit (e.g. SecAgg+ could not unmask after
            a dropout) are recorded as failed; the global model stayed as it was."""
            for earlier in sorted(set(self.round_started) - self.aggregated):
                recorder.db.upsert_round(recorder.study_id, plan.name, earlier, seconds=time.time() - self.round_started[earlier],
                                         participants={"trained": [], "declined": {}, "failed": 0,
                                                       "outcome": "not aggregated: the round failed; the global model is unchanged"})
                self.aggregated.add(earlier)

        def configure_fit(self, server_round, parameters, client_manager):
            self.record_unaggregated()
            self.round_started[server_round] = time.time()
            recorder.db.update_study(recorder.study_id, current_phase=plan.name, current_round=server_round)
            recorder.db.upsert_round(recorder.study_id, plan.name, server_round, started=self.round_started[server_round])
            instructions = super().configure_fit(server_round, parameters, client_manager)
            config = self._config(server_round)
            kept = [(proxy, FitIns(fit.parameters, {**fit.config, **config})) for proxy, fit in instructions
                    if recorder.node_site.get(proxy.node_id) not in recorder.declined_sites]
            return kept

        def aggregate_fit(self, server_round, results, failures):
            self.aggregated.add(server_round)
            if not results:
                return None, {}
            # Plain rounds: each result holds one site's encoded arrays. SecAgg+ rounds: every result holds the
            # same already-averaged arrays. Either way the uniform mean is the mean of the encodings.
            encoded = [parameters_to_ndarrays(fit.parameters) for _, fit in results]
            mean = [np.mean([e[i] for e in encoded], axis=0) for i in range(len(encoded[0]))]
            state, part_weights = decode_aggregate(mean, self.global_state)
            averaged = ndarrays_to_parameters(list(state.values()))
            for _, fit in results:
                fit.parameters, fit.num_examples = averaged, 1
            parameters, _ = super().aggregate_fit(server_round, results, failures)
            self.global_state = dict(zip(self.global_state, parameters_to_ndarrays(parameters)))
            trained, declined, rows = [], {}, []
            for proxy, fit in results:
                metrics = dict(fit.metrics)
                site = recorder.site_of(proxy.node_id, metrics)
                rows.append((plan.name, server_round, "fit", site, metrics))
                if metrics.get("declined"):
                    declined[site] = str(metrics.get("reason", ""))
                    recorder.declined_sites[site] = declined[site]
                elif metrics.get("examples"):
                    trained.append(site)
            recorder.db.add_site_metrics(recorder.study_id, rows)
            checkpoint = recorder.on_round_end(plan.name, server_round, self.global_state) if recorder.on_round_end else ""
            recorder.db.upsert_round(
                recorder.study_id, plan.name, server_round, seconds=time.time() - self.round_started.get(server_round, time.time()),
                participants={"trained": trained, "declined": declined, "failed": len(failures),
                              "part_weights": part_weights},
                model_hash=model_hash(self.global_state), checkpoint=checkpoint)
            return parameters, {"sites_trained": len(trained)}

        def configure_evaluate(self, server_round, parameters, client_manager):
            instructions = super().configure_evaluate(server_round, parameters, client_manager)
            config = self._config(server_round)
            return [(proxy, EvaluateIns(ev.parameters, {**ev.config, **config})) for proxy, ev in instructions]

        def aggregate_evaluate(self, server_round, results, failures):
            summary: dict[str, float] = {}
            total = sum(res.num_examples for _, res in results)
            rows = []
            for proxy, res in results:
                metrics = dict(res.metrics) | {"num-examples": res.num_examples}
                rows.append((plan.name, server_round, "evaluate", recorder.site_of(proxy.node_id, metrics), metrics))
                for key, value in metrics.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) and total:
                        summary[key] = summary.get(key, 0.0) + float(value) * res.num_examples / total
            recorder.db.add_site_metrics(recorder.study_id, rows)
            summary.pop("num-examples", None)
            summary.pop("epsilon", None)  # ε is per site, never averaged
            recorder.db.upsert_round(recorder.study_id, plan.name, server_round, global_metrics=summary)
            return summary.get("loss"), summary

    return StudyStrategy()
