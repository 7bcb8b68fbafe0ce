"""Flower ClientApp: one hospital. It only converts between Flower messages and `client.site_round`
(which holds the training and evaluation). Flower starts a fresh ClientApp process for every message, so this one
stays thin (flwr + numpy): where the SuperNode runs with the site's warm worker (client/site_node.py), the round
is handed to that worker, which already holds torch, the model code and the site's data; otherwise (simulation,
`--no-worker`) the heavy modules are imported here, inside the handlers.

Site identity comes from the SuperNode's node config: `site-config="<path to the site's TOML>"` and, with a
worker, `site-worker="<its folder>"` (in simulation, from the partition id: protocol/simulated_site.py).
Outgoing: model arrays (encoded for part-weighted averaging) and aggregate metrics only.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_STATE

from client.worker_channel import NODE_CONFIG_KEY, WorkerAddress, call
from protocol.simulated_site import site_config_for_partition
from protocol.procfs import seconds_since_start
from protocol.round_contract import RoundConfig
from protocol import mask_prg, overlap_check, round_admission
from protocol.site_metrics import MetricKey

# ChaCha20 masks, as the server's workflow uses (the package re-exports the mod function under the module's name)
SECAGG_MOD = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")
mask_prg.install(SECAGG_MOD)


class SiteClient(NumPyClient):
    def __init__(self, site_config: str, worker: WorkerAddress | None, run_id: int):
        self.site_config = site_config
        self.worker = worker
        self.run_id = run_id

    def _work(self, op: str, parameters: list, config) -> tuple:
        rc = RoundConfig.from_record(dict(config))
        if self.worker is not None:
            return call(self.worker, {"op": op, "run": self.run_id, "round": rc, "arrays": list(parameters)})
        from client import site_round  # torch and the model code, in this process

        return site_round.work(op, self.site_config, list(parameters), rc)

    def fit(self, parameters, config):
        startup = seconds_since_start()
        update, metrics = self._work("train", parameters, config)
        metrics[MetricKey.STARTUP_S] = startup
        metrics[MetricKey.WORK_S] = seconds_since_start() - startup
        # weight 1: the encoded update carries its own per-part example weights (protocol/codec.py)
        return update, 1, metrics

    def evaluate(self, parameters, config):
        return self._work("evaluate", parameters, config)

    def admission(self, rc: RoundConfig) -> tuple[str | None, list[str], float | None]:
        """Will this site train the round? (client/site_round.admission)"""
        if self.worker is not None:
            return call(self.worker, {"op": "admission", "run": self.run_id, "round": rc}, wait_s=120)
        from client import site_round

        return site_round.admission(self.site_config, rc)

    def overlap(self, fingerprints: dict[str, list[str]]) -> dict[str, int]:
        """Counts of the lab's fingerprints among this site's records (protocol/overlap_check.py)."""
        if self.worker is not None:
            return call(self.worker, {"op": "overlap", "run": self.run_id, "fingerprints": fingerprints}, wait_s=120)
        from client import site_round

        return site_round.overlap(self.site_config, fingerprints)


def site_client(context: Context) -> SiteClient:
    # A real SuperNode names its own site config; only a virtual one (simulation) takes it from the run config.
    site_config = context.node_config.get("site-config") or site_config_for_partition(context.node_config,
                                                                                       context.run_config)
    if not site_config:
        raise ValueError("SuperNode started without node config 'site-config' (the path to the site's TOML)")
    worker = context.node_config.get(NODE_CONFIG_KEY)
    return SiteClient(str(site_config), WorkerAddress(Path(str(worker))) if worker else None, context.run_id)


def client_fn(context: Context):
    return site_client(context).to_client()


def answer_overlap_check(message: Message, context: Context, call_next):
    """The lab's overlap query before a study (protocol/overlap_check.py): answered here with counts only;
    every other message passes on."""
    if message.metadata.message_type != MessageType.QUERY or overlap_check.RECORD not in message.content.config_records:
        return call_next(message, context)
    client = site_client(context)
    counts = client.overlap(overlap_check.decode(message.content.config_records[overlap_check.RECORD]))
    from sitedata.site_config import load_site_config

    reply = {overlap_check.SITE: load_site_config(client.site_config).site_id, **counts}
    return Message(RecordDict({overlap_check.RECORD: ConfigRecord(reply)}), reply_to=message)


def answer_round_admission(message: Message, context: Context, call_next):
    """The lab's admission query before a training round (protocol/round_admission.py): answered here, before
    any training, with accept and the parts this site would train, or decline and the reason. A lab that would
    unmask with another mask generator than this site's gets a decline: the masks would not cancel."""
    if message.metadata.message_type != MessageType.QUERY or round_admission.RECORD not in message.content.config_records:
        return call_next(message, context)
    query = dict(message.content.config_records[round_admission.RECORD])
    client = site_client(context)
    from sitedata.site_config import load_site_config

    site = load_site_config(client.site_config).site_id
    ours, theirs = mask_prg.installed_name(SECAGG_MOD), str(query.get(round_admission.MASK_PRG, ""))
    if theirs != ours and theirs != round_admission.NO_SECAGG:
        answer = round_admission.Answer(site, False, f"the lab unmasks with mask generator {theirs!r}; this site masks "
                                                     f"with {ours!r}, so the sum would be garbage")
    else:
        reason, parts, epsilon = client.admission(RoundConfig.from_record(query))
        answer = round_admission.Answer(site, reason is None, reason or "", frozenset(parts), epsilon)
    reply = RecordDict({round_admission.RECORD: ConfigRecord(answer.to_record())})
    return Message(reply, reply_to=message)


def secaggplus_when_asked(message: Message, context: Context, call_next):
    """SecAgg+ for SecAgg+ messages; plain train/evaluate messages pass straight through (the stock mod
    fails on messages without its config record). The training call learns the SecAgg+ reconstruction threshold
    from this site's own SecAgg+ state (distributed DP sizes its noise share by it), never from the server:
    any value the server put there is overwritten, and a plain message says 0."""
    fit_config = message.content.config_records.get(FIT_CONFIG)
    if fit_config is not None:
        fit_config[SECAGG_THRESHOLD] = 0
    if "secaggplus_configs" in message.content.config_records:
        state = context.state.config_records.get(RECORD_KEY_STATE)
        if fit_config is not None and state is not None:
            fit_config[SECAGG_THRESHOLD] = int(state.get("threshold", 0))
        return secaggplus_mod(message, context, call_next)
    return call_next(message, context)


FIT_CONFIG = "fitins.config"  # where Flower's legacy FitIns config travels in a message
SECAGG_THRESHOLD = "secagg_threshold"  # protocol.round_contract.RoundConfig.secagg_threshold



app = ClientApp(client_fn=client_fn, mods=[answer_overlap_check, answer_round_admission, secaggplus_when_asked])
