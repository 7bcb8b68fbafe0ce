"""Per-phase strategies: Flower's own FedAvg / FedProx / FedAdam / FedYogi, each with the `StudyRounds` mixin,
which only instructs, screens and aggregates:

1. it admits a round's contributors from the sites' answers to the admission query (protocol/round_admission.py):
   with too few, the round stops before anyone trains; it then sends the round's instructions (the round
   contract) to the admitted sites only;
2. it screens replies: a reply must come from a registered site under its own name, and a plain reply must be an
   acceptable update (protocol/codec.py); under SecAgg+ the unmasked mean is checked instead;
3. it averages the accepted updates once (Flower's `aggregate`; SecAgg+ hands the mean already) and lets the
   strategy's own step (FedAdam's moments, ...) act on that mean;
4. it fills the round's typed record (protocol/round_record.py), which the study runner takes and writes.

Any decline bars a site from later fit rounds of the study (it still evaluates): a site that declined for its
budget, its policy or its own update checks would decline again. Evaluation metrics are averaged by Flower
(`evaluate_metrics_aggregation_fn`).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
from flwr.common import Code, EvaluateIns, FitIns, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import FedAdam, FedAvg, FedProx, FedYogi
from flwr.server.strategy.aggregate import aggregate

from protocol.codec import UpdateRejected, check_update, decode_mean, decode_weights, encode_weights
from protocol.participants import Participants
from protocol.round_admission import Answer, decide
from protocol.round_contract import RoundConfig
from protocol.round_record import RoundRecord, SiteReport
from protocol.site_metrics import MetricKey as K
from protocol.site_metrics import weighted_mean_of_numbers
from server.site_roster import SiteRoster
from server.study_config import PhasePlan, StudyConfig


class StudyRounds:
    """Mixin over a Flower strategy: round instructions, screening, one aggregation, the round's record."""

    def __init__(self, plan: PhasePlan, study: StudyConfig, roster: SiteRoster, global_state: dict[str, np.ndarray], *,
                 round_offset: int = 0, public_bank: Callable[[dict[str, np.ndarray]], bytes] | None = None, **kwargs):
        super().__init__(fraction_fit=1.0, fraction_evaluate=1.0, min_fit_clients=plan.min_sites,
                         min_evaluate_clients=plan.min_sites, min_available_clients=plan.min_sites,
                         initial_parameters=ndarrays_to_parameters(encode_weights(global_state)),
                         evaluate_metrics_aggregation_fn=weighted_mean_of_numbers, **kwargs)
        self.plan, self.study, self.roster = plan, study, roster
        self.public_bank = public_bank  # global weights -> the public alignment bank (DP pretraining)
        self.global_state = dict(global_state)
        self.layout = tuple((name, np.shape(value)) for name, value in global_state.items())
        # Flower counts this run's rounds from 1; a resumed phase goes on from the last round it finished.
        self.round_offset = round_offset
        self.record: RoundRecord | None = None
        self.asked: set[str] = set()
        self.fit_screened = False
        self.admitted_nodes: set[int] | None = None  # None: no admission query ran (every site not declined is asked)
        self.frozen_parts: list[str] = []

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
        study, plan = self.study, self.plan
        return RoundConfig(study=study.name, phase=plan.name, server_round=self.phase_round(server_round), preset=study.preset,
                           plan=study.plan_text, local_epochs=plan.local_epochs, lr=plan.lr,
                           proximal_mu=plan.proximal_mu if plan.strategy == "fedprox" else 0.0,
                           finetune_mode=plan.finetune_mode, dp=study.dp, max_site_examples=study.max_site_examples,
                           max_update_ratio=study.max_update_ratio, max_grad_norm=study.max_grad_norm,
                           target_epsilon=study.target_epsilon, seed=study.seed, dp_mode=study.dp_mode if study.dp else "local",
                           noise_multiplier=study.noise_multiplier, dp_batch=study.dp_batch,
                           frozen_parts=",".join(self.frozen_parts)).to_record()

    def admission_config(self, flower_round: int) -> dict:
        """The round contract as the admission query carries it (nothing frozen yet)."""
        self.frozen_parts = []
        return self.round_config(flower_round)

    def min_contributors(self) -> int:
        return self.study.secagg.min_contributors if self.study.secagg.enabled else 1

    def admit(self, flower_round: int, answers: dict[int, Answer], silent: list[int],
              errors: dict[int, str] | None = None) -> bool:
        """Decide who trains this round from the sites' admission answers (answers the roster does not accept
        are dropped; error replies, such as a site refusing the lab's app, are recorded as refusals). False: the
        round stops before anyone trains, its record saying why."""
        self.record = RoundRecord(self.plan.name, self.phase_round(flower_round), started=time.time())
        self.fit_screened = False
        self.record.participants.refused = {self.roster.site_of(node): reason for node, reason in (errors or {}).items()}
        named: list[Answer] = []
        for node, answer in answers.items():
            site, problem = self.roster.identify(node, {K.SITE: answer.site})
            if problem:
                self.record.participants.rejected[site] = f"admission answer dropped: {problem}"
                continue
            named.append(Answer(site, answer.accept, answer.reason, answer.parts, answer.epsilon))
        asked = {answer.site for answer in named}
        named += [Answer(site, False, f"{reason} (declined earlier in this study; not asked again)")
                  for site, reason in self.roster.declined_sites.items() if site not in asked]
        nodes = {self.roster.site_of(node): node for node in answers}
        decision = decide(named, [self.roster.site_of(node) for node in silent], self.min_contributors())
        self.frozen_parts = decision.frozen_parts
        self.admitted_nodes = {nodes[site] for site in decision.admitted}
        participants = self.record.participants
        participants.declined = dict(decision.declined)
        participants.dropped = list(decision.silent)
        for answer in named:
            if not answer.accept and answer.site in asked:
                self.roster.declined(answer.site, answer.reason)
                metrics = {K.SITE: answer.site, K.PHASE: self.plan.name, K.ROUND: self.record.server_round,
                           K.DECLINED: 1, K.REASON: answer.reason, K.EXAMPLES: 0}
                if answer.epsilon is not None:
                    metrics[K.EPSILON] = answer.epsilon
                self.record.site_reports.append(SiteReport(answer.site, "fit", 0, {str(k): v for k, v in metrics.items()}))
        if decision.stop:
            participants.outcome = decision.stop
            self.record.seconds = time.time() - self.record.started
            self.fit_screened = True
            return False
        return True

    def fit_record(self) -> RoundRecord:
        """The round's record once training is over. A round Flower moved past without aggregate_fit (SecAgg+
        could not unmask after a dropout) is recorded as not aggregated, every site asked counted as dropped."""
        if self.record is None:  # Flower never asked for instructions: nothing was sent
            self.record = RoundRecord(self.plan.name, 0, started=time.time())
        record = self.record
        if record.seconds is None:
            record.seconds = time.time() - record.started
        if not self.fit_screened:
            record.participants = Participants(declined=dict(record.participants.declined), dropped=sorted(self.asked),
                                               outcome="not aggregated: the round failed; the global model is unchanged")
            self.fit_screened = True
        return record

    def take_round(self) -> RoundRecord:
        """The finished round's record, evaluation included; the next round starts a new one."""
        record, self.record = self.fit_record(), None
        return record

    # --- fit ---

    def configure_fit(self, server_round, parameters, client_manager):
        if self.record is None or self.record.server_round != self.phase_round(server_round):  # no admission ran
            self.record = RoundRecord(self.plan.name, self.phase_round(server_round), started=time.time())
            self.admitted_nodes = None
        self.fit_screened = False
        config = self.round_config(server_round)
        if self.public_bank is not None:  # computed under this round's global model
            config["public_bank"] = self.public_bank(self.global_state)
        asked = [(proxy, FitIns(fit.parameters, {**fit.config, **config}))
                 for proxy, fit in super().configure_fit(server_round, parameters, client_manager)
                 if not self.roster.has_declined(proxy.node_id)
                 and (self.admitted_nodes is None or proxy.node_id in self.admitted_nodes)]
        self.asked = {self.roster.site_of(proxy.node_id) for proxy, _ in asked}
        return asked

    def aggregate_fit(self, flower_round, results, failures):
        server_round = self.phase_round(flower_round)  # what sites, the DB and FedAdam's bias correction count
        secagg = self.study.secagg.enabled
        accepted, reports, participants = self._screen_fit(results, failures, check=not secagg)
        self.fit_screened = True
        self.record.site_reports += reports
        self.record.participants = participants
        mean = self._mean(accepted, secagg) if self._enough_noise_shares(reports) else None
        if mean is None:
            self.record.seconds = time.time() - self.record.started
            return None, {}
        state, participants.part_weights = decode_mean(mean, self.global_state)
        reply = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(encode_weights(state)), 1, {})
        parameters, _ = super().aggregate_fit(server_round, [(accepted[0][0], reply)], [])  # the strategy's own step
        self.global_state = decode_weights(parameters_to_ndarrays(parameters), self.layout)
        self.record.seconds = time.time() - self.record.started
        return parameters, {"sites_trained": len(participants.trained)}

    def _enough_noise_shares(self, reports: list[SiteReport]) -> bool:
        """Distributed DP: the sum carries the full noise only with at least t shares in it (t: the SecAgg+
        threshold each site sized its share for); with fewer the aggregate is refused, never applied."""
        if not (self.study.dp and self.study.dp_mode == "distributed"):
            return True
        shares = [r for r in reports if not r.metrics.get(K.DECLINED) and r.metrics.get(K.EXAMPLES) is not None
                  and r.metrics.get(K.NOISE_SHARES)]
        needed = max((int(r.metrics[K.NOISE_SHARES]) for r in shares), default=2)
        if len(shares) >= needed:
            return True
        participants = self.record.participants
        participants.trained = []
        participants.outcome = (f"not aggregated: distributed DP needs {needed} sites' noise shares in the sum, "
                                f"got {len(shares)}; the global model is unchanged")
        return False

    def _mean(self, accepted: list, secagg: bool) -> list[np.ndarray] | None:
        """The plain mean of the accepted updates, or None with the record's outcome saying why not."""
        participants = self.record.participants
        if not accepted:
            participants.outcome = "not aggregated: no acceptable update; the global model is unchanged"
            return None
        vectors = [parameters_to_ndarrays(fit.parameters) for _, fit in accepted]
        # SecAgg+ hands every reply the same unmasked mean; plain replies are averaged here, once.
        mean = vectors[0] if secagg else aggregate([(vector, 1) for vector in vectors])
        if secagg:
            try:
                check_update(mean, self.global_state, self.study.max_update_ratio)
            except UpdateRejected as err:
                participants.trained = []
                participants.outcome = (f"not aggregated: the unmasked aggregate failed its checks ({err}); "
                                        "the global model is unchanged")
                return None
        return mean

    def _screen_fit(self, results, failures, *, check: bool) -> tuple[list, list[SiteReport], Participants]:
        before = self.record.participants  # the admission's declines and silent sites
        participants = Participants(failed=len(failures), declined=dict(before.declined), rejected=dict(before.rejected),
                                    refused=dict(before.refused))
        accepted, reports = [], []
        for proxy, fit in results:
            site, metrics, problem = self._identify(proxy, fit)
            if problem is None and check:
                problem = self._update_problem(fit)
            if problem:
                participants.rejected[site] = problem
                continue
            if (flag := self.roster.epsilon_flags(site, metrics)):
                participants.flags[site] = flag
            reports.append(SiteReport(site, "fit", int(metrics.get(K.EXAMPLES, 0) or 0), metrics))
            accepted.append((proxy, fit))  # a decline is an update of part weights 0: it moves nothing
            if metrics.get(K.DECLINED):
                participants.declined[site] = str(metrics.get(K.REASON, ""))
                self.roster.declined(site, participants.declined[site])
            elif metrics.get(K.EXAMPLES):
                participants.trained.append(site)
        participants.failed += len(participants.rejected)
        participants.dropped = sorted(set(before.dropped) | (self.asked - {self.roster.site_of(proxy.node_id) for proxy, _ in results}))
        return accepted, reports, participants

    def _identify(self, proxy, reply) -> tuple[str, dict, str | None]:
        metrics = dict(reply.metrics)
        site, problem = self.roster.identify(proxy.node_id, metrics)
        return site, metrics, problem

    def _update_problem(self, fit) -> str | None:
        """Why one site's reply cannot be averaged in (plain rounds), or None."""
        try:
            check_update(parameters_to_ndarrays(fit.parameters), self.global_state, self.study.max_update_ratio)
        except UpdateRejected as err:
            return str(err)
        return None

    # --- evaluate ---

    def configure_evaluate(self, server_round, parameters, client_manager):  # round_config adds the offset
        config = self.round_config(server_round)
        return [(proxy, EvaluateIns(ev.parameters, {**ev.config, **config}))
                for proxy, ev in super().configure_evaluate(server_round, parameters, client_manager)]

    def aggregate_evaluate(self, flower_round, results, failures):
        accepted = []
        participants = self.record.participants
        for proxy, reply in results:
            site, metrics, problem = self._identify(proxy, reply)
            if problem:
                participants.evaluate_rejected[site] = problem
                continue
            if (flag := self.roster.epsilon_flags(site, metrics)):
                participants.evaluate_flags[site] = flag
            accepted.append((proxy, reply))
            self.record.site_reports.append(SiteReport(site, "evaluate", int(reply.num_examples), metrics))
        # A site below its release floor withheld its metrics and count: nothing of it enters the means.
        counted = [(proxy, reply) for proxy, reply in accepted if reply.num_examples > 0]
        if not counted:
            return None, {}
        loss, summary = super().aggregate_evaluate(self.phase_round(flower_round), counted, failures)
        self.record.global_metrics |= summary
        return loss, summary


class StudyFedAvg(StudyRounds, FedAvg):
    pass


class StudyFedProx(StudyRounds, FedProx):
    def __init__(self, plan: PhasePlan, *args, **kwargs):
        super().__init__(plan, *args, proximal_mu=plan.proximal_mu, **kwargs)


class StudyFedAdam(StudyRounds, FedAdam):
    def __init__(self, plan: PhasePlan, *args, **kwargs):
        super().__init__(plan, *args, eta=plan.server_lr, **kwargs)


class StudyFedYogi(StudyRounds, FedYogi):
    def __init__(self, plan: PhasePlan, *args, **kwargs):
        super().__init__(plan, *args, eta=plan.server_lr, **kwargs)


STRATEGIES = {"fedavg": StudyFedAvg, "fedprox": StudyFedProx, "fedadam": StudyFedAdam, "fedyogi": StudyFedYogi}


def make_strategy(plan: PhasePlan, study: StudyConfig, roster: SiteRoster, global_state: dict[str, np.ndarray], *,
                  round_offset: int = 0, strategy_state: dict[str, np.ndarray] | None = None,
                  public_bank: Callable[[dict[str, np.ndarray]], bytes] | None = None) -> StudyRounds:
    strategy = STRATEGIES[plan.strategy](plan, study, roster, global_state, round_offset=round_offset,
                                         public_bank=public_bank)
    strategy.restore_strategy_state(strategy_state or {})
    return strategy
