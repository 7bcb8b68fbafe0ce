"""Per-phase strategies: Flower's own FedAvg / FedProx / FedAdam / FedYogi, each with the `StudyRounds`
mixin that (1) sends each round's instructions (the round contract), (2) decodes the part-weighted average
(see shared_models.weighted_parts) before the strategy's own aggregation step, (3) stops asking sites that
declined for lack of privacy budget, and (4) records everything in the run database. Aggregation itself stays
Flower's, evaluation metrics included (`evaluate_metrics_aggregation_fn`).
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
from flwr.common import EvaluateIns, FitIns, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import FedAdam, FedAvg, FedProx, FedYogi

from rundb.writer import RunDatabase
from server.study_config import PhasePlan, StudyConfig
from shared_models.round_contract import RoundConfig
from shared_models.site_metrics import MetricKey as K
from shared_models.site_metrics import weighted_mean_of_numbers
from shared_models.update_checks import update_problem
from shared_models.weighted_parts import decode_aggregate, update_shapes
from shared_models.wire import pack, unpack


def model_hash(state: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name, array in state.items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


class StudyRecorder:
    """Study-wide bookkeeping shared by the phases' strategies.

    Site identity comes from the node a reply arrived on: `node_sites` maps each SuperNode's id (fixed when the
    lab registered the site's key) to the site's name. A reply whose self-reported name disagrees is dropped.
    Without a registry (insecure runs, simulation) the self-reported name is all there is."""

    def __init__(self, db: RunDatabase, study_id: int, study: StudyConfig, node_sites: dict[int, str] | None = None):
        self.db, self.study_id, self.study = db, study_id, study
        self.node_sites = dict(node_sites or {})
        self.declined_sites: dict[str, str] = {}  # site -> reason; they still evaluate
        self.node_site: dict[int, str] = dict(self.node_sites)
        self.last_epsilon = db.last_epsilon_by_site()  # across studies: a site's lifetime ε never goes down
        self.on_round_end = None  # callback(phase, round, state, strategy state) -> checkpoint path

    def identify(self, node_id: int, metrics: dict) -> tuple[str, str | None]:
        """(the site a reply came from, why it must be dropped or None)."""
        claimed = str(metrics.get(K.SITE, ""))
        if not self.node_sites:
            site = claimed or f"node-{node_id}"
            self.node_site[node_id] = site
            return site, None
        site = self.node_sites.get(node_id)
        if site is None:
            return self.site_of(node_id), f"node {node_id} is not a registered site"
        if claimed and claimed != site:
            return site, f"reply claims to be {claimed!r} but came from {site!r}'s node"
        return site, None

    def site_of(self, node_id: int) -> str:
        """The name a node's replies are recorded under: its site, or `node-<id>` for a node no site owns."""
        return self.node_site.get(node_id, f"node-{node_id}")

    def epsilon_flags(self, site: str, metrics: dict) -> str | None:
        """Remember the site's lifetime ε; a value lower than before means its ledger was reset or replaced."""
        epsilon = metrics.get(K.EPSILON)
        if not isinstance(epsilon, (int, float)):
            return None
        before = self.last_epsilon.get(site)
        self.last_epsilon[site] = float(epsilon)
        if before is not None and epsilon < before - 1e-9:
            return f"lifetime ε went down from {before:.3f} to {epsilon:.3f}: the site's ledger was reset or replaced"
        return None


class StudyRounds:
    """Mixin over a Flower strategy: round instructions, part-weighted decoding and recording."""

    def __init__(self, plan: PhasePlan, recorder: StudyRecorder, global_state: dict[str, np.ndarray], *,
                 round_offset: int = 0, **kwargs):
        super().__init__(fraction_fit=1.0, fraction_evaluate=1.0, min_fit_clients=plan.min_sites,
                         min_evaluate_clients=plan.min_sites, min_available_clients=plan.min_sites,
                         initial_parameters=ndarrays_to_parameters(pack(list(global_state.values()))),
                         evaluate_metrics_aggregation_fn=weighted_mean_of_numbers, **kwargs)
        self.plan, self.recorder = plan, recorder
        self.global_state = dict(global_state)
        self.round_started: dict[int, float] = {}
        self.asked: dict[int, set[str]] = {}  # Flower round -> sites asked to train
        self.aggregated: set[int] = set()
        # Flower counts this run's rounds from 1; a resumed phase goes on from the last round it finished.
        self.round_offset = round_offset

    def phase_round(self, server_round: int) -> int:
        return server_round + self.round_offset

    def strategy_state(self) -> dict[str, np.ndarray]:
        """What a resumed phase needs besides the weights: FedAdam/FedYogi moments (none for FedAvg/FedProx)."""
        return {f"{name}.{i}": array for name in ("m_t", "v_t") for i, array in enumerate(getattr(self, name, None) or [])}

    def restore_strategy_state(self, state: dict[str, np.ndarray]) -> None:
        for name in ("m_t", "v_t"):
            arrays = [state[k] for k in sorted((k for k in state if k.startswith(f"{name}.")), key=lambda k: int(k.split(".")[1]))]
            if arrays:
                setattr(self, name, arrays)

    def round_config(self, server_round: int) -> dict:
        study, plan = self.recorder.study, self.plan
        return RoundConfig(study=study.name, phase=plan.name, server_round=self.phase_round(server_round), preset=study.preset,
                           plan=study.plan_text, local_epochs=plan.local_epochs, lr=plan.lr,
                           proximal_mu=plan.proximal_mu if plan.strategy == "fedprox" else 0.0,
                           finetune_mode=plan.finetune_mode, dp=study.dp, max_site_examples=study.max_site_examples,
                           max_update_ratio=study.max_update_ratio,
                           seed=study.seed).to_record()

    def record_unaggregated(self) -> None:
        """Rounds Flower moved past without calling aggregate_fit (e.g. SecAgg+ could not unmask after a
        dropout) are recorded as failed; the global model stayed as it was."""
        recorder = self.recorder
        for earlier in sorted(set(self.round_started) - self.aggregated):
            recorder.db.upsert_round(recorder.study_id, self.plan.name, self.phase_round(earlier),
                                     seconds=time.time() - self.round_started[earlier],
                                     participants={"trained": [], "declined": {}, "failed": 0,
                                                   "dropped": self.dropped(earlier, set()),
                                                   "outcome": "not aggregated: the round failed; the global model is unchanged"})
            self.aggregated.add(earlier)

    def configure_fit(self, server_round, parameters, client_manager):
        recorder = self.recorder
        self.record_unaggregated()
        self.round_started[server_round] = time.time()
        recorder.db.update_study(recorder.study_id, current_phase=self.plan.name, current_round=self.phase_round(server_round))
        recorder.db.upsert_round(recorder.study_id, self.plan.name, self.phase_round(server_round),
                                 started=self.round_started[server_round])
        instructions = super().configure_fit(server_round, parameters, client_manager)
        config = self.round_config(server_round)
        asked = [(proxy, FitIns(fit.parameters, {**fit.config, **config})) for proxy, fit in instructions
                 if recorder.node_site.get(proxy.node_id) not in recorder.declined_sites]
        self.asked[server_round] = {recorder.site_of(proxy.node_id) for proxy, _ in asked}
        return asked

    def dropped(self, flower_round: int, replied: set[str]) -> list[str]:
        """Sites asked to train this round that sent no reply (dead, unreachable, or failed in a stage)."""
        return sorted(self.asked.get(flower_round, set()) - replied)

    def aggregate_fit(self, flower_round, results, failures):
        recorder, phase = self.recorder, self.plan.name
        self.aggregated.add(flower_round)
        server_round = self.phase_round(flower_round)  # what sites, the DB and FedAdam's bias correction count
        secagg = recorder.study.secagg.enabled
        # SecAgg+: one site's update is never seen; the aggregate is checked below instead
        shapes = update_shapes(self.global_state)
        check = None if secagg else (lambda fit: self._update_problem(fit, shapes))
        accepted, rows, rejected, flags = self._screen(server_round, "fit", results, check)
        outcome = None
        if accepted:
            # Plain rounds: each result holds one site's encoded arrays. SecAgg+ rounds: every result holds the
            # same already-averaged arrays. Either way the uniform mean is the mean of the encodings.
            try:
                encoded = [unpack(parameters_to_ndarrays(fit.parameters), shapes) for _, fit in accepted]
            except ValueError as err:  # only a SecAgg+ aggregate gets here unchecked
                encoded, outcome = [], f"not aggregated: the aggregate is not this model's update ({err})"
        if accepted and outcome is None:
            mean = [np.mean([e[i] for e in encoded], axis=0) for i in range(len(encoded[0]))]
            problem = update_problem(mean, self.global_state, recorder.study.max_update_ratio) if secagg else None
            if problem:
                outcome = f"not aggregated: the unmasked aggregate failed its checks ({problem}); the global model is unchanged"
        elif not accepted:
            outcome = "not aggregated: no acceptable update; the global model is unchanged"
        trained, declined = [], {}
        for (_, fit), (*_, site, metrics) in zip(accepted, rows):
            if metrics.get(K.DECLINED):
                declined[site] = str(metrics.get(K.REASON, ""))
                recorder.declined_sites[site] = declined[site]
            elif metrics.get(K.EXAMPLES) and outcome is None:
                trained.append(site)
        participants = {"trained": trained, "declined": declined, "failed": len(failures) + len(rejected),
                        "rejected": rejected, "flags": flags,
                        "dropped": self.dropped(flower_round, {recorder.site_of(proxy.node_id) for proxy, _ in results})}
        seconds = time.time() - self.round_started.get(flower_round, time.time())
        if outcome is not None:
            recorder.db.upsert_round(recorder.study_id, phase, server_round, seconds=seconds,
                                     participants=participants | {"outcome": outcome})
            return None, {}
        state, part_weights = decode_aggregate(mean, self.global_state)
        averaged = ndarrays_to_parameters(pack(list(state.values())))
        for _, fit in accepted:
            fit.parameters, fit.num_examples = averaged, 1
        parameters, _ = super().aggregate_fit(server_round, accepted, failures)
        self.global_state = dict(zip(self.global_state, unpack(parameters_to_ndarrays(parameters),
                                                               [np.shape(v) for v in self.global_state.values()])))
        checkpoint = (recorder.on_round_end(phase, server_round, self.global_state, self.strategy_state())
                      if recorder.on_round_end else "")
        recorder.db.upsert_round(recorder.study_id, phase, server_round, seconds=seconds,
                                 participants=participants | {"part_weights": part_weights},
                                 model_hash=model_hash(self.global_state), checkpoint=checkpoint)
        return parameters, {"sites_trained": len(trained)}

    def _update_problem(self, fit, shapes: list[tuple[int, ...]]) -> str | None:
        """Why one site's reply cannot be averaged in (plain rounds), or None."""
        try:
            encoded = unpack(parameters_to_ndarrays(fit.parameters), shapes)
        except ValueError as err:
            return str(err)
        return update_problem(encoded, self.global_state, self.recorder.study.max_update_ratio)

    def _screen(self, server_round: int, kind: str, results: list, check=None) -> tuple[list, list, dict, dict]:
        """Keep the replies that came from a registered site under its own name (and pass `check`), record
        their metrics; -> (accepted replies, their metric rows, rejected site -> reason, flagged site -> reason)."""
        recorder = self.recorder
        accepted, rows, rejected, flags = [], [], {}, {}
        for proxy, reply in results:
            metrics = dict(reply.metrics)
            site, problem = recorder.identify(proxy.node_id, metrics)
            if problem is None and check is not None:
                problem = check(reply)
            if problem:
                rejected[site] = problem
                continue
            if (flag := recorder.epsilon_flags(site, metrics)):
                flags[site] = flag
            accepted.append((proxy, reply))
            if kind == "evaluate":
                metrics[K.NUM_EXAMPLES] = reply.num_examples
            rows.append((self.plan.name, server_round, kind, site, metrics))
        recorder.db.add_site_metrics(recorder.study_id, rows)
        return accepted, rows, rejected, flags

    def configure_evaluate(self, server_round, parameters, client_manager):  # round_config adds the offset
        instructions = super().configure_evaluate(server_round, parameters, client_manager)
        config = self.round_config(server_round)
        return [(proxy, EvaluateIns(ev.parameters, {**ev.config, **config})) for proxy, ev in instructions]

    def aggregate_evaluate(self, flower_round, results, failures):
        recorder, server_round = self.recorder, self.phase_round(flower_round)
        accepted, _, rejected, flags = self._screen(server_round, "evaluate", results)
        loss, summary = super().aggregate_evaluate(server_round, accepted, failures)
        recorder.db.upsert_round(recorder.study_id, self.plan.name, server_round, global_metrics=summary)
        if rejected or flags:
            recorder.db.upsert_round(recorder.study_id, self.plan.name, server_round,
                                     participants={"evaluate_rejected": rejected, "evaluate_flags": flags})
        return loss, summary


class StudyFedAvg(StudyRounds, FedAvg):
    pass


class StudyFedProx(StudyRounds, FedProx):
    def __init__(self, plan: PhasePlan, recorder: StudyRecorder, global_state: dict[str, np.ndarray], **kwargs):
        super().__init__(plan, recorder, global_state, proximal_mu=plan.proximal_mu, **kwargs)


class StudyFedAdam(StudyRounds, FedAdam):
    def __init__(self, plan: PhasePlan, recorder: StudyRecorder, global_state: dict[str, np.ndarray], **kwargs):
        super().__init__(plan, recorder, global_state, eta=plan.server_lr, **kwargs)


class StudyFedYogi(StudyRounds, FedYogi):
    def __init__(self, plan: PhasePlan, recorder: StudyRecorder, global_state: dict[str, np.ndarray], **kwargs):
        super().__init__(plan, recorder, global_state, eta=plan.server_lr, **kwargs)


STRATEGIES = {"fedavg": StudyFedAvg, "fedprox": StudyFedProx, "fedadam": StudyFedAdam, "fedyogi": StudyFedYogi}


def make_strategy(plan: PhasePlan, recorder: StudyRecorder, global_state: dict[str, np.ndarray], *,
                  round_offset: int = 0, strategy_state: dict[str, np.ndarray] | None = None) -> StudyRounds:
    strategy = STRATEGIES[plan.strategy](plan, recorder, global_state, round_offset=round_offset)
    strategy.restore_strategy_state(strategy_state or {})
    return strategy
