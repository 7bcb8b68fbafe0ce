"""A site that dies at any SecAgg+ stage leaves the round to the others, and the aggregate is the plain mean of the
survivors' updates. The protocol runs for real (Flower's SecAgg+ workflow as the server builds it, Flower's client
mod as the ClientApp wraps it, ChaCha20 masks); only the transport is an in-process grid, which answers for a dead
site what the SuperLink answers once the site's heartbeat has lapsed: an error reply."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from flwr.app import Error, Message
from flwr.client import ClientApp, NumPyClient
from flwr.common import ConfigRecord, Context, RecordDict
from flwr.common.constant import ErrorCode
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import FedAvg
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key as WorkflowKey
from flwr.serverapp.grid import Grid
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
import flwr.compat.common.recorddict_compat as compat

from client.client_app import secaggplus_when_asked
from server.secure_aggregation import fit_workflow
from server.study_config import SecAggSettings

STAGES = ("setup", "share_keys", "collect_masked_vectors", "unmask")
pytestmark = pytest.mark.usefixtures("server_task_identity")
NODES = (11, 22, 33)
SHAPES = [(5,), (2, 3)]


def site_update(node_id: int) -> list[np.ndarray]:
    rng = np.random.default_rng(node_id)
    return [rng.uniform(-1, 1, shape).astype(np.float32) for shape in SHAPES]


class FixedUpdate(NumPyClient):
    def __init__(self, node_id: int):
        self.node_id = node_id

    def fit(self, parameters, config):
        return site_update(self.node_id), 1, {}


class InProcessGrid(Grid):
    """Delivers each message to that node's ClientApp; a node dead from `stage` on answers with an error."""

    def __init__(self, dead_node: int | None, dead_from: str | None):
        self.app = ClientApp(client_fn=lambda context: FixedUpdate(context.node_id).to_client(),
                             mods=[secaggplus_when_asked])
        self.contexts = {n: Context(run_id=1, node_id=n, node_config={}, state=RecordDict(), run_config={})
                         for n in NODES}
        self.dead_node, self.dead_from = dead_node, dead_from
        self.stages_seen: list[str] = []

    def _dead(self, node_id: int, stage: str) -> bool:
        return node_id == self.dead_node and STAGES.index(stage) >= STAGES.index(self.dead_from)

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for message in messages:
            message = copy.deepcopy(message)  # a real transport serialises: no content shared between nodes
            stage = str(message.content.config_records["secaggplus_configs"]["stage"])
            self.stages_seen.append(stage)
            node_id = message.metadata.dst_node_id
            message.metadata.__dict__["_message_id"] = message.object_id
            if self._dead(node_id, stage):
                reply = Message(Error(code=ErrorCode.NODE_UNAVAILABLE, reason="node offline"), reply_to=message)
            else:
                reply = self.app(message, self.contexts[node_id])
            reply.metadata.__dict__["_src_node_id"] = node_id
            replies.append(reply)
        return replies

    # The SecAgg+ workflow uses only send_and_receive; the rest of the Grid interface is not reached.
    def set_run(self, run_id): ...
    run = property(lambda self: None)
    def create_message(self, *args, **kwargs): raise NotImplementedError
    def get_node_ids(self): return NODES
    def get_nodes(self): raise NotImplementedError
    def push_messages(self, messages): raise NotImplementedError
    def pull_messages(self, message_ids): raise NotImplementedError


def run_one_round(grid: InProcessGrid, workflow) -> list[np.ndarray] | None:
    """One SecAgg+ fit round; the new global arrays, or None when the round was not aggregated."""
    initial = [np.zeros(shape, np.float32) for shape in SHAPES]
    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=2, min_available_clients=3,
                      initial_parameters=ndarrays_to_parameters(initial), accept_failures=True)
    manager = SimpleClientManager()
    for node_id in NODES:
        manager.register(GridClientProxy(node_id=node_id, grid=grid, run_id=1))
    context = LegacyContext(Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}),
                            config=ServerConfig(num_rounds=1), strategy=strategy, client_manager=manager)
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: 1})
    context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters(initial), keep_input=True)
    workflow(grid, context)
    result = parameters_to_ndarrays(compat.arrayrecord_to_parameters(context.state.array_records[MAIN_PARAMS_RECORD],
                                                                      keep_input=True))
    return None if all(np.array_equal(a, b) for a, b in zip(result, initial)) else result


def study_workflow():
    return fit_workflow(SecAggSettings(timeout_s=30))


def test_all_sites_alive_gives_the_plain_mean():
    result = run_one_round(InProcessGrid(None, None), study_workflow())
    expected = [np.mean(arrays, axis=0) for arrays in zip(*(site_update(n) for n in NODES))]
    for got, want in zip(result, expected):
        np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("stage", STAGES)
def test_a_site_dying_at_each_stage_leaves_the_plain_mean_of_the_survivors(stage):
    grid = InProcessGrid(dead_node=22, dead_from=stage)
    result = run_one_round(grid, study_workflow())
    assert stage in grid.stages_seen and "unmask" in grid.stages_seen, grid.stages_seen
    assert result is not None, f"round not aggregated after a dropout at {stage}"
    # A site that sent its masked vector and died before unmasking is in the sum (its mask is removed with the others' shares).
    contributors = NODES if stage == "unmask" else (11, 33)
    expected = [np.mean(arrays, axis=0) for arrays in zip(*(site_update(n) for n in contributors))]
    for got, want in zip(result, expected):
        np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("stage", ["setup", "share_keys"])
def test_flowers_own_workflow_fails_these_dropouts(stage):
    """The defect the study's workflow mends: a site lost before its key shares went out ends the round."""
    from flwr.server.workflow import SecAggPlusWorkflow

    stock = SecAggPlusWorkflow(num_shares=1.0, reconstruction_threshold=0.6, max_weight=1.0, timeout=30)
    try:
        result = run_one_round(InProcessGrid(dead_node=22, dead_from=stage), stock)
    except KeyError:
        result = None
    assert result is None
